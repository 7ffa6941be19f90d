"""The names of the training package (:mod:`perceptron1_jax.training`) where they have always
been importable: ``from perceptron1_jax.train import TrainConfig, train, load_checkpoint, ...``.
Nothing is defined here; each name is re-exported from the module that holds it."""

from perceptron1_jax.bptt import make_value_and_grad  # noqa: F401
from perceptron1_jax.training.config import (  # noqa: F401
    COMPUTE_DTYPES,
    DEFAULT_EMBED,
    DEFAULT_TARGETS,
    DTYPES,
    GRAD_SOURCES,
    RESUMABLE_CHANGES,
    TrainConfig,
    check_config,
    check_run,
    config_from_dict,
    run_spec,
    task_info,
)
from perceptron1_jax.training.config import check_model_options as _check_model_options  # noqa: F401
from perceptron1_jax.training.config import config_layers as _layers  # noqa: F401
from perceptron1_jax.training.evaluation import (  # noqa: F401
    EVAL_CHUNK,
    describe_eval,
    evaluate_split,
    gradient_flow_of,
    make_evaluate,
)
from perceptron1_jax.training.evaluation import format_value as _fmt  # noqa: F401
from perceptron1_jax.training.evaluation import json_scalar as _scalar  # noqa: F401
from perceptron1_jax.training.ingredients import (  # noqa: F401
    dropout_key_of,
    get_batch,
    init_run_params,
    on_device,
    run_data,
)
from perceptron1_jax.training.ingredients import run_keys as _keys  # noqa: F401
from perceptron1_jax.training.ingredients import run_optimizer as _optimizer  # noqa: F401
from perceptron1_jax.training.ingredients import task_datasets as _datasets  # noqa: F401
from perceptron1_jax.training.loop import train  # noqa: F401
from perceptron1_jax.training.resume import (  # noqa: F401
    MismatchError,
    check_resumable,
    check_same_data,
    load_checkpoint,
    restore,
)
from perceptron1_jax.training.resume import saved_info as _saved_info  # noqa: F401
from perceptron1_jax.training.run_folder import check_out_dir, trim_metrics  # noqa: F401
from perceptron1_jax.training.state import (  # noqa: F401
    NonFiniteStop,
    RunState,
    SignalStop,
    TrainingStopped,
    WriteFailed,
)
from perceptron1_jax.training.state import stop_requests as _stop_requests  # noqa: F401
from perceptron1_jax.training.step import (  # noqa: F401
    all_finite,
    batch_accuracy,
    clip_fired,
    gradient_agreement,
    make_train_step,
    make_truncated_step,
    run_mesh,
)
from perceptron1_jax.training.step import guarded_update as _apply  # noqa: F401
