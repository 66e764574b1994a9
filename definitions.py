"""The one code location entry point: merges what each area exports, picks resources and the executor."""

import dagster as dg

import pipelines
import schedules
import sensors
from offload import paths
from offload.payload import install_cli_error_hook
from offload.runtime.executors import executor_from_env
from resources import resources_for

install_cli_error_hook()

defs = dg.Definitions.merge(
    pipelines.defs,
    schedules.defs,
    sensors.defs,
    dg.Definitions(resources=resources_for(paths.environment()), executor=executor_from_env()),
)
