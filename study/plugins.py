"""The user's own code that Ray workers must import: the modules of the user losses (`loss.target:
package.module:function`, docs/losses.md §1.9) that a space trains with. The study ships each one's
top-level package (or single-file module) with the Ray job as `py_modules` of its runtime environment, so that
a worker on any node imports it without the user's working directory or PYTHONPATH. A module installed in this
Python environment is not shipped: the nodes have it as they have msl.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Any

from msl.user_loss import is_import_path, load_user_loss
from study.space import Space, check_distribution


def loss_targets(space: Space) -> set[str]:
    """Every `loss.target` that the space's source models and trials train with."""
    targets = set()
    for experiment in space.experiments:
        targets.add(space.source_config(experiment, experiment.seeds[0]).loss.target)
        for variant in experiment.variants:
            searched = {k: check_distribution(d, k) for k, d in experiment.searched_params(variant).items()}
            for target in searched.get("loss.target", [None]):
                params = {k: v[0] for k, v in searched.items()} | ({"loss.target": target} if target else {})
                cfg = space.trial_config(experiment, variant, experiment.seeds[0], params)
                targets.add(cfg.loss.target)
    return targets


def top_level_module(path: str) -> Path:
    """The folder of the top-level package (or the file of a single-file module) that holds the user loss at
    `path`, e.g. `/home/me/project/mypkg` for `mypkg.losses:focal_entropy`."""
    module_name = path.partition(":")[0]
    load_user_loss(path)  # imports the module, from the working directory too
    module_file = Path(sys.modules[module_name].__file__)
    depth = module_name.count(".") + (module_file.name == "__init__.py")
    folder = module_file.parents[depth]  # the sys.path entry it was imported from
    top = module_name.split(".")[0]
    return folder / top if (folder / top).is_dir() else folder / f"{top}.py"


def runtime_env(space: Space) -> dict[str, Any]:
    """Ray's runtime environment for the space's workers: `py_modules` of its user losses, if any."""
    installed = {Path(sysconfig.get_path(name)).resolve() for name in ("purelib", "platlib")}
    modules = {top_level_module(target) for target in loss_targets(space) if is_import_path(target)}
    shipped = sorted(str(module) for module in modules if module.resolve().parent not in installed)
    return {"py_modules": shipped} if shipped else {}
