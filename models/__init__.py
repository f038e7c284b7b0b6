"""The methods, one file each, registered by name. Importing this package registers them all."""

from affectune.models._registry import (  # noqa: F401
    build_model, list_models, make_config, model_class, register,
)
from affectune.models.base import MERModel, ModelConfig  # noqa: F401

DEMO_MODEL = "dqf"
"""The model `python -m affectune demo` trains unless told otherwise (it has a `demo` preset)."""

# Importing the model files registers them (@register); keep one line per method.
from affectune.models import cider  # noqa: F401,E402
from affectune.models import dqf  # noqa: F401,E402
from affectune.models import late_fusion  # noqa: F401,E402
from affectune.models import mculora  # noqa: F401,E402
from affectune.models import mult  # noqa: F401,E402
from affectune.models import mitr_dnet  # noqa: F401,E402
from affectune.models import umdf  # noqa: F401,E402
