"""Your own jobs: every module in this folder is registered in the code location, with no list to edit.

``offload new job NAME`` writes one here (with its example payload in ``examples/`` and its test in
``tests/``); ``pipelines/__init__.py`` loads the folder with Dagster's
``load_definitions_from_package_module``, which collects every job (and asset, schedule, sensor) defined at
a module's top level. A job name must be unique in the code location, and so must an op name: prefix your
ops with the job's name (the template does).
"""
