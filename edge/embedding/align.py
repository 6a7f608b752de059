"""5-point similarity alignment onto the ArcFace 112x112 template.

SFace was trained on faces warped this way; any other crop costs accuracy. A similarity transform
(rotation, uniform scale, translation) also undoes head roll, which is why a tilted head at the
door still embeds like an upright one once its landmarks are found.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 112
#: Eye centres, nose tip and mouth corners of the standard ArcFace template, image-left first.
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray = TEMPLATE) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points onto ``dst``."""
    src = np.asarray(src, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = (sig * np.diag(fix)).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 BGR crop SFace expects."""
    m = similarity_transform(landmarks)
    return cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
