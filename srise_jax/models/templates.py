"""Five-point landmark templates: where each model's aligned crops put the face.

A template lists, in pixels of the model's input crop, where the left eye,
right eye, nose tip, left and right mouth corners must land (`srise_jax.align`
warps a photo so that its detected landmarks match them). They belong to the
models, not to the aligner: a model is trained on crops made one way, and
`srise_jax.models.load` hands each model's template out with it.

Coordinates follow OpenCV's `warpAffine`: (x, y) with x to the right and y
down, the centre of pixel [row i, column j] at (x, y) = (j, i).
"""

from __future__ import annotations

import numpy as np

# insightface python-package/insightface/utils/face_align.py, `arcface_dst`:
# left eye, right eye, nose tip, left and right mouth corners in a 112x112 crop.
ARCFACE_112 = np.array([[38.2946, 51.6963],
                        [73.5318, 51.5014],
                        [56.0252, 71.7366],
                        [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)
ARCFACE_112.setflags(write=False)



def arcface_template(size: int) -> np.ndarray:
    """`ARCFACE_112` for a square crop of another side, as insightface's `estimate_norm` makes it.

    A side that is a multiple of 112 scales the template by size / 112; any
    other side is read as a multiple of 128 (size / 128, shifted right by 8
    pixels of 128), insightface's two conventions.

    Args:
      size: the crop's side in pixels.

    Returns:
      Float[ndarray, "5 2"], read-only.
    """
    if size % 112 == 0:
        template = ARCFACE_112 * (size / 112)
    else:
        ratio = size / 128
        template = ARCFACE_112 * ratio + np.array([8 * ratio, 0], np.float32)
    template = template.astype(np.float32)
    template.setflags(write=False)
    return template


# Where MTCNN's five points (left eye, right eye, nose tip, left and right
# mouth corners, as `srise_jax.detect` gives them) fall in the 150x150 chips
# of dlib's face recognition network: `dlib.get_face_chip(img, shape,
# size=150, padding=0.25)`, which maps dlib's 5-point shape (eye corners, nose
# base) onto dlib's mean face shape (`get_face_chip_details`,
# dlib/image_transforms/interpolation.h) padded by 0.25 on every side. dlib's
# mean face is the underlying source; MTCNN's points are not among dlib's, so
# they were measured: `detect_faces` on the chips dlib 20.0.1 itself cut from
# the four frontal sample photos (obama, obama2, obama3, biden;
# tests/fixtures/dlib, made by its make_reference.py), each chip padded by 50
# black pixels so the face box stays inside the image, and the per-coordinate
# median of the four, rounded to 4 decimals. Cross-check against dlib's
# 68-point mean face (eye centres = mean of each eye's six points, nose tip =
# point 30, mouth corners = points 48 and 54, at (0.25 + u) / 1.5 * 149 pixels):
# eyes agree within 2 pixels, mouth corners within 4.3 and the nose tip within
# 3.9. Use it at size=150 (`align_face` does not scale it).
DLIB_150 = np.array([[47.3935, 44.3861],
                     [101.4503, 46.4313],
                     [77.3392, 77.1237],
                     [50.0691, 104.0724],
                     [100.3356, 106.5763]], dtype=np.float32)
DLIB_150.setflags(write=False)
