import warnings

# Dagster 1.13 passes `owners` to SensorDefinition itself whenever it attaches resources to a
# sensor, and warns about its own call in every process that loads the code location (the code
# server, each run worker, each step): one line per process in the dagster dev log. We pass no owners.
warnings.filterwarnings("ignore", message=r"Parameter `owners` of initializer `SensorDefinition.__init__`")
