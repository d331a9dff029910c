"""Anatomy-like pixel data for ``xio synth --content realistic`` (needs numpy).

A head phantom per series: nested ellipsoids (scalp, skull, a CSF rim, brain) whose cross-section
shrinks towards the top and bottom of the stack, a gray/white-matter texture that drifts from
slice to slice, two ventricles and a few lesion-like blobs, a smooth coil bias, air around it,
then noise: Rician for MR (the magnitude of signal plus complex Gaussian noise), Gaussian for CT,
whose pixels outside the circular reconstruction field hold the padding value 0 (-1024 HU).
Values are 12-bit (0-4095) in 16-bit little-endian words.

The constants are calibrated so that gzip -1 and zstd -1 compress these files about as much as
the uncompressed MR and CT files that ship with pydicom and pydicom-data (see
``bench/compressibility.py`` and docs/benchmarks.md): MR brain values of a few hundred with a
noise sigma of 3.5, as in those files (maxima 600-1,100, background noise of a few units).

Speed matters (``medium`` is 3,000 slices): the head outline's radius is quantised once per
series, so a slice's tissue map is one table look-up per pixel, and the Gaussian noise comes from
an inverse-CDF table indexed by random 16-bit words, which is several times faster than
numpy's normal generator.
"""

from __future__ import annotations

from functools import cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = ["HeadPhantom"]

Array = npt.NDArray[np.float32]

_MAX = 4095
_LUT = 4096  # quantisation steps of the squared normalised radius over [0, 2)

#: MR tissue values before scaling, outermost first: air, scalp (fat), skull, CSF rim, brain.
_MR_VALUES = (0.0, 1500.0, 250.0, 500.0, 1100.0)
#: The calibrated scale and noise (see the module docstring).
_MR_SCALE = 0.45
_MR_SIGMA = 3.5
#: CT values in Hounsfield units for the same tissues, and the CT noise (HU).
_CT_HU = (-1000.0, -80.0, 900.0, 10.0, 35.0)
_CT_SIGMA = 10.0
#: Outer radius of each shell relative to the head outline: CSF rim, skull, scalp, head.
_SHELLS = (0.86, 0.89, 0.94, 1.0)
_BLOBS = 8


@cache
def _gauss_table(sigma: float) -> Array:
    """65,536 normal quantiles of standard deviation ``sigma``, one per 16-bit word."""
    dist = NormalDist(0.0, sigma)
    return np.array([dist.inv_cdf((k + 0.5) / 65536) for k in range(65536)], dtype=np.float32)


class HeadPhantom:
    """One series' anatomy; :meth:`pixels` renders slice ``i`` of ``slices`` with fresh noise.

    Parameters
    ----------
    seed
        Sequence of integers (for example ``[seed, series]``): same seed, same bytes.
    rows, columns
        Image size.
    slices
        Number of slices the head is spread over (the series' instance count).
    modality
        ``"MR"`` or ``"CT"``.
    """

    def __init__(self, seed: list[int], rows: int, columns: int, slices: int, modality: str):
        rng = np.random.default_rng(seed)
        self._rng = rng
        self.rows, self.columns, self.slices = rows, columns, slices
        self.ct = modality == "CT"
        y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)
        x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)
        self._y, self._x = y, x
        a, b = 0.78 + 0.06 * rng.random(), 0.90 + 0.06 * rng.random()
        self._cy, self._cx = float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))
        r2 = ((y[:, None] - self._cy) / b) ** 2 + ((x[None, :] - self._cx) / a) ** 2
        self._idx = np.minimum(r2 * (_LUT / 2), _LUT - 1).astype(np.intp)
        self._r2 = r2.astype(np.float32)
        # Buffers reused for every slice: fresh 256 kB arrays cost page faults each time.
        shape = (rows, columns)
        self._img: Array = np.empty(shape, np.float32)
        self._tex: Array = np.empty(shape, np.float32)
        self._tmp: Array = np.empty(shape, np.float32)
        self._brain = np.empty(shape, np.bool_)
        self._noise: Array = np.empty((2, *shape), np.float32)
        self._r2_grid = ((np.arange(_LUT, dtype=np.float32) + 0.5) / (_LUT / 2)).astype(np.float32)
        self._shells = np.array(_SHELLS, dtype=np.float32) ** 2
        if self.ct:
            self._values = np.array(_CT_HU, dtype=np.float32) + 1024
            self._sigma, self._texture = _CT_SIGMA, 8.0
            self._fov: npt.NDArray[np.bool_] | None = (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0
        else:
            gain = _MR_SCALE * float(rng.uniform(0.9, 1.1))
            self._values = np.array(_MR_VALUES, dtype=np.float32) * gain
            self._sigma, self._texture = _MR_SIGMA, 300.0 * gain
            self._fov = None
        self._bias = (
            1.0
            + 0.12 * float(rng.uniform(-1, 1)) * y[:, None]
            + 0.08 * float(rng.uniform(-1, 1)) * x[None, :]
        ).astype(np.float32)
        # Python floats keep the per-slice arithmetic in float32.
        self._freqs = [[float(v) for v in row] for row in rng.uniform(6, 16, size=(2, 2))]
        self._phases = [[float(v) for v in row] for row in rng.uniform(0, 2 * np.pi, size=(2, 3))]
        lesion = 1.0 if not self.ct else 0.05
        self._blobs = np.column_stack(
            [
                rng.uniform(-0.45, 0.45, _BLOBS),  # centre x, y, z
                rng.uniform(-0.5, 0.5, _BLOBS),
                rng.uniform(-0.8, 0.8, _BLOBS),
                rng.uniform(0.04, 0.12, _BLOBS),  # radii x, y, z
                rng.uniform(0.04, 0.12, _BLOBS),
                rng.uniform(0.05, 0.3, _BLOBS),
                rng.uniform(-400, 600, _BLOBS) * lesion * self._values[4] / 1100,
            ]
        )

    def _anatomy(self, i: int) -> Array:
        z = -0.95 + 1.9 * (i + 0.5) / self.slices
        s2 = max(1e-6, 1.0 - z * z)  # the head's cross-section (squared) at this height
        # 4 = brain ... 0 = air, for every quantised radius; then one look-up per pixel
        shells = self._shells * s2
        region = len(_SHELLS) - np.searchsorted(shells, self._r2_grid)
        img = np.take(self._values[region], self._idx, out=self._img)
        brain = np.less(self._r2, shells[0], out=self._brain)
        f, p = self._freqs, self._phases
        y, x = self._y, self._x
        tex, tmp = self._tex, self._tmp
        np.outer(
            np.sin(f[0][0] * y + p[0][0] + 3 * z * p[0][2]),
            np.cos(f[0][1] * x + p[0][1] - 2 * z),
            out=tex,
        )
        np.outer(
            np.cos(f[1][0] * y + p[1][0] - 2 * z * p[1][2]),
            np.sin(f[1][1] * x + p[1][1] + 3 * z),
            out=tmp,
        )
        tex += tmp
        tex *= 3
        np.tanh(tex, out=tex)
        tex *= self._texture
        tex *= brain
        img += tex
        csf = -0.55 * float(self._values[4])
        for side in (-0.12, 0.12):
            self._ellipsoid(
                img, brain, (self._cx + side, self._cy - 0.05, 0.05), (0.08, 0.25, 0.35), z, csf
            )
        for bx, by, bz, ra, rb, rc, dv in self._blobs:
            self._ellipsoid(img, brain, (bx, by, bz), (ra, rb, rc), z, float(dv))
        img *= self._bias
        return img

    def _ellipsoid(
        self,
        img: Array,
        brain: npt.NDArray[np.bool_],
        centre: tuple[float, float, float],
        radii: tuple[float, float, float],
        z: float,
        delta: float,
    ) -> None:
        """Add ``delta`` inside an ellipsoid's cross-section at ``z``, within the brain only."""
        (cx, cy, cz), (ra, rb, rc) = centre, radii
        t = 1.0 - ((z - cz) / rc) ** 2
        if t <= 0:
            return
        ra, rb = ra * t**0.5, rb * t**0.5
        h, w = self.rows, self.columns
        i0, i1 = (
            max(0, int((cy - rb + 1) / 2 * (h - 1))),
            min(h, int((cy + rb + 1) / 2 * (h - 1)) + 2),
        )
        j0, j1 = (
            max(0, int((cx - ra + 1) / 2 * (w - 1))),
            min(w, int((cx + ra + 1) / 2 * (w - 1)) + 2),
        )
        if i0 >= i1 or j0 >= j1:
            return
        yy = (self._y[i0:i1, None] - cy) / rb
        xx = (self._x[None, j0:j1] - cx) / ra
        img[i0:i1, j0:j1] += (delta * (yy * yy + xx * xx <= 1.0)) * brain[i0:i1, j0:j1]

    def pixels(self, i: int) -> bytes:
        """Slice ``i`` (0-based) as 12-bit values in little-endian 16-bit words.

        Parameters
        ----------
        i
            The slice index; slices must be asked for in order for the same seed to give the same
            bytes (the noise stream advances with every call).

        Returns
        -------
        bytes
            ``2 * rows * columns`` bytes.
        """
        img = self._anatomy(i)
        words = np.frombuffer(self._rng.bytes(4 * self.rows * self.columns), dtype=np.uint16)
        noise = np.take(
            _gauss_table(self._sigma),
            words.reshape(2, self.rows, self.columns),
            out=self._noise,
        )
        img += noise[0]
        if self._fov is not None:
            img *= self._fov  # CT: padding outside the reconstruction circle
        else:
            # Rician: |signal + n0 + i n1|
            img *= img
            n1 = noise[1]
            n1 *= n1
            img += n1
            np.sqrt(img, out=img)
        np.clip(img, 0, _MAX, out=img)
        return img.astype("<u2").tobytes()
