r"""Gramian weightings: small pure-tensor functions mapping the ``[T, T]`` Gramian :math:`G = JJ^\top` of
the task gradients to task weights :math:`w` (``[T]``); the update of the shared parameters is
:math:`d = J^\top w`. They call no autograd, validate their input (square, finite, symmetric PSD,
``ValueError`` otherwise), keep the input's device and dtype, and make at most one host transfer (the
small solves run in float64 on the CPU). :mod:`moomtl.methods.jacobian` turns them into methods.

================  =====================================================  ==================================
function          method                                                 reference checked in the tests
================  =====================================================  ==================================
mean_weights      mean gradient                                          TorchJD ``Mean``
sum_weights       sum of gradients                                       TorchJD ``Sum``
mgda_weights      MGDA min-norm (Sener & Koltun 2018)                    TorchJD ``MGDA``, KKT
upgrad_weights    UPGrad (Quinton & Rey 2024)                            TorchJD ``UPGrad``, KKT
dualproj_weights  DualProj (Quinton & Rey 2024)                          TorchJD ``DualProj``, KKT
imtl_g_weights    IMTL-G (Liu et al. 2021)                               TorchJD ``IMTLG``, equal projections
aligned_mtl_...   Aligned-MTL (Senushkin et al. 2023)                    TorchJD ``AlignedMTL``
nash_mtl_weights  Nash-MTL (Navon et al. 2022), exact Newton solve       equation residual
================  =====================================================  ==================================
"""

from moomtl.weightings.aligned_mtl import aligned_mtl_weights
from moomtl.weightings.dual_cone import project_weights
from moomtl.weightings.dualproj import dualproj_weights
from moomtl.weightings.imtl_g import imtl_g_weights
from moomtl.weightings.mean import mean_weights, sum_weights
from moomtl.weightings.mgda import mgda_weights
from moomtl.weightings.nash_mtl import nash_mtl_weights
from moomtl.weightings.upgrad import upgrad_weights

__all__ = [
    "aligned_mtl_weights",
    "dualproj_weights",
    "imtl_g_weights",
    "mean_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "project_weights",
    "sum_weights",
    "upgrad_weights",
]
