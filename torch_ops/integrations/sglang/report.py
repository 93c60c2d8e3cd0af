"""`PatchReport`: what one patch() call did."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PatchReport:
    """What patch() did. `patched`: "module.name" (or "module.Class.method") replaced by this call;
    `already_patched`: by an earlier call; `checked`: class bindings verified to be the defining
    module's class (they read the patched globals); `skipped`: "module[.name]" -> why it was left
    alone; `absent`: modules or optional names this release does not have; `rebound`: cached bound
    methods of live instances re-pointed to a replaced method; `notes`: version remarks."""
    sglang_version: str
    layout: str
    layout_package: str
    patched: list = field(default_factory=list)
    already_patched: list = field(default_factory=list)
    checked: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    absent: list = field(default_factory=list)
    rebound: int = 0
    notes: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.patched)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sglang_version", "layout", "layout_package", "patched",
                                               "already_patched", "checked", "skipped", "absent", "rebound",
                                               "notes")}

    def summary(self) -> str:
        lines = [f"gatednorm: sglang {self.sglang_version} ({self.layout_package}): "
                 f"{len(self.patched)} patched, {len(self.already_patched)} already patched, "
                 f"{len(self.skipped)} skipped, {self.rebound} live bound methods re-pointed"]
        lines += [f"  patched {x}" for x in self.patched]
        lines += [f"  skipped {k}: {v}" for k, v in self.skipped.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
