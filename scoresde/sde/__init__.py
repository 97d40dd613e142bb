"""Forward processes: linear SDEs with scalar coefficients (see :mod:`scoresde.sde.base`)."""

from .base import SDE
from .continuous import VESDE, VPSDE, SubVPSDE
from .discrete import DiscreteVPSDE
from .flow import RectifiedFlow

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE", "RectifiedFlow"]
