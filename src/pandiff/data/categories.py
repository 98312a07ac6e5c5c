"""The category table shared by a dataset, its maps and the model.

Categories are addressed by a *contiguous index*: 0 is void (unlabelled), and 1..K are the
dataset's categories in table order. COCO's sparse ids (up to 200) are kept beside each entry
so maps convert back to COCO panoptic without loss.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pandiff.errors import DataError


@dataclass(frozen=True)
class Category:
    """One dataset category: its name, COCO id, whether it is a thing, and its palette colour."""

    name: str
    coco_id: int
    isthing: bool
    color: tuple[int, int, int] | None = None
    supercategory: str = ""


@dataclass(frozen=True)
class CategoryTable:
    """Ordered categories; contiguous index i (1-based) is ``categories[i - 1]``, 0 is void."""

    categories: tuple[Category, ...]
    _by_coco_id: dict = field(init=False, repr=False, compare=False, hash=False)
    _by_name: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_id: dict[int, int] = {}
        by_name: dict[str, int] = {}
        for index, cat in enumerate(self.categories, start=1):
            if cat.coco_id in by_id:
                raise DataError(f"category table lists COCO id {cat.coco_id} twice; ids must be unique")
            by_id[cat.coco_id] = index
            by_name[cat.name] = index
        object.__setattr__(self, "_by_coco_id", by_id)
        object.__setattr__(self, "_by_name", by_name)

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, index: int) -> Category:
        """The category at contiguous ``index`` (1..K)."""
        if not 1 <= index <= len(self.categories):
            raise DataError(f"category index {index} is outside 1..{len(self.categories)} (0 is void)")
        return self.categories[index - 1]

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    def index_of_coco_id(self, coco_id: int) -> int:
        """Contiguous index of a COCO category id; raises DataError for an unknown id."""
        try:
            return self._by_coco_id[int(coco_id)]
        except KeyError:
            raise DataError(
                f"unknown category id {coco_id}: it is not in the category table "
                f"({len(self)} categories); check that the annotation and category files belong together"
            ) from None

    def index_of_name(self, name: str) -> int:
        """Contiguous index of a category name; raises DataError for an unknown name."""
        try:
            return self._by_name[name]
        except KeyError:
            raise DataError(f"unknown category name {name!r}; known: {', '.join(self._by_name)}") from None

    def thing_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.categories, start=1) if c.isthing]

    def stuff_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.categories, start=1) if not c.isthing]

    def isthing_lut(self) -> list[bool]:
        """``lut[i]`` tells whether contiguous index i is a thing (index 0, void, is not)."""
        return [False] + [c.isthing for c in self.categories]

    # -- COCO JSON -------------------------------------------------------------------------------
    @classmethod
    def from_coco(cls, entries: Iterable[dict]) -> CategoryTable:
        """Build from COCO ``categories`` entries (``id``, ``name``, ``isthing``, optional ``color``)."""
        cats = []
        for e in entries:
            try:
                color = tuple(int(v) for v in e["color"]) if e.get("color") is not None else None
                cats.append(
                    Category(
                        name=str(e["name"]),
                        coco_id=int(e["id"]),
                        isthing=bool(e.get("isthing", 1)),
                        color=color,  # type: ignore[arg-type]
                        supercategory=str(e.get("supercategory", "")),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"malformed category entry {e!r}: {exc}") from None
        if not cats:
            raise DataError("the category table is empty")
        return cls(tuple(cats))

    def to_coco(self) -> list[dict]:
        """COCO ``categories`` entries, in table order."""
        out = []
        for c in self.categories:
            entry = {
                "id": c.coco_id,
                "name": c.name,
                "supercategory": c.supercategory,
                "isthing": int(c.isthing),
            }
            if c.color is not None:
                entry["color"] = list(c.color)
            out.append(entry)
        return out

    @classmethod
    def load(cls, path: str | Path) -> CategoryTable:
        """Read a JSON list of COCO category entries (or a dict with a ``categories`` key)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"category table {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"category table {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("categories", [])
        return cls.from_coco(data)

    def save(self, path: str | Path) -> None:
        from pandiff.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_coco(), indent=1))

    @classmethod
    def from_names(cls, things: Sequence[str], stuff: Sequence[str]) -> CategoryTable:
        """A table with things first (COCO ids 1..) then stuff, no colours."""
        cats = [Category(n, i, True) for i, n in enumerate(things, start=1)]
        cats += [Category(n, len(things) + i, False) for i, n in enumerate(stuff, start=1)]
        return cls(tuple(cats))
