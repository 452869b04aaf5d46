"""Every job, sensor, schedule, asset and asset check says what it does (the UI shows it)."""

import dagster as dg

from pipelines.definitions import defs


def _described(kind: str, name: str, description: str | None) -> str | None:
    if not description or len(description.split()) < 8:
        return f"{kind} {name}: description missing or too short ({description!r})"
    return None


def test_every_definition_is_described():
    problems = []
    for job in defs.jobs or []:
        if not job.name.startswith("__"):
            problems.append(_described("job", job.name, job.description))
    for sensor in defs.sensors or []:
        problems.append(_described("sensor", sensor.name, sensor.description))
    for schedule in defs.schedules or []:
        problems.append(_described("schedule", schedule.name, schedule.description))
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        problems.append(_described("asset", key.to_user_string(), node.description))
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        problems.append(_described("check", check_key.name, spec.description))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_every_check_says_what_to_do_when_it_fails():
    graph = defs.resolve_asset_graph()
    silent = [k.name for k in graph.asset_check_keys
              if "if it fails" not in (graph.get_check_spec(k).description or "").lower()]
    assert not silent, f"checks without 'If it fails: ...' in their description: {silent}"
