"""What `bench ls` lists: registered methods, metrics and bundles."""

from __future__ import annotations

from typing import Any


def describe() -> dict[str, Any]:
    from bench import metrics
    from idinvert import zoo
    from methods import registry

    out_methods = []
    for name in registry.names():
        cls = registry.get(name)
        out_methods.append({
            "name": name,
            "summary": cls.summary or (cls.__doc__ or "").strip().splitlines()[0],
            "needs": list(cls.needs),
            "hyperparameters": cls.hyperparameters(),
        })
    out_metrics = [
        {"name": m.name, "label": m.display, "direction": m.direction, "level": m.level, "needs": list(m.needs),
         "unit": m.unit, "aggregate": m.aggregate, "table": m.table, "description": m.description,
         "anytime": m.anytime, "sweep": m.sweep, "bootstrap": m.bootstrap, "references": list(m.references),
         "controls": [list(c) for c in m.controls]}
        for m in metrics.all_metrics()
    ]
    out_bundles = [{"name": name, "description": spec.description, "files": list(spec.files)}
                   for name, spec in zoo.BUNDLES.items()]
    return {"methods": out_methods, "metrics": out_metrics, "bundles": out_bundles}
