"""The automation sensor: evaluates every asset's automation condition (rollups refresh when a
drain lands new rows in what they read, and their checks run with them).

Dagster's implicit default sensor starts STOPPED; this one runs by default, so `make dev` (whose
`dagster dev` runs the daemon) materializes each rollup within a tick or two of the first drains.
"""

import dagster as dg

# all_asset_checks: AssetSelection.all() holds only the checks of materializable assets, so the
# checks on the ledgers (tables the drains write, declared as external assets) would never run.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor", target=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Evaluates the assets' automation conditions every 15 s: a rollup (and its checks) runs "
                "once new rows land in the ledgers it reads.")
