"""Helpers for the metrics tests: scrape `/metrics` and read samples, and the metrics contract
(`deploy/monitoring/metrics.yml`) the alerts and the dashboard are written against.

Metrics are per process (like a real instance), and the suite runs many apps in one process, so
tests compare a scrape before and after what they do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_FILE = ROOT / "deploy" / "monitoring" / "metrics.yml"
SPEC_BUCKETS = [0.1, 0.3, 0.5, 0.7, 1, 3, 5, 7, 10]

Labels = frozenset[tuple[str, str]]


def contract() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(CONTRACT_FILE.read_text())
    return {m["name"]: m for m in data["metrics"]}


@dataclass
class Scrape:
    text: str
    content_type: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # family name -> type
    labels: dict[str, set[str]] = field(default_factory=dict)  # family name -> label names

    @classmethod
    def parse(cls, response: httpx.Response) -> Scrape:
        assert response.status_code == 200, response.text
        scrape = cls(response.text, response.headers["content-type"])
        for family in text_string_to_metric_families(response.text):
            scrape.types[family.name] = family.type
            names = scrape.labels.setdefault(family.name, set())
            for sample in family.samples:
                scrape.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
                names.update(k for k in sample.labels if k != "le")
        return scrape

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent, as Prometheus reads a
        not-yet-created series)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include these."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def buckets(self, name: str, **labels: str) -> list[float]:
        """The `le` bounds of a histogram's series with these labels (+Inf included)."""
        want = set(labels.items())
        bounds = {
            float(dict(ls)["le"])
            for (n, ls), _ in self.samples.items()
            if n == f"{name}_bucket" and want <= ls
        }
        return sorted(bounds)

    def series_with(self, name: str, label: str) -> set[str]:
        """Values a label takes in a metric's samples."""
        return {
            dict(ls)[label] for (n, ls) in self.samples if n.startswith(name) and label in dict(ls)
        }


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> Scrape:
    return Scrape.parse(await client.get(path))


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def check_contract(scrape: Scrape, service: str) -> None:
    """Every metric the contract lists for `service` is exposed with its type, labels and
    exactly its buckets (+Inf added); the other service's own metrics are not."""
    for name, metric in contract().items():
        exposed_as = name.removesuffix("_total") if metric["type"] == "counter" else name
        if service not in metric["services"]:
            assert exposed_as not in scrape.types, f"{name} is not a {service} metric"
            continue
        assert scrape.types.get(exposed_as) == metric["type"], (name, scrape.types.get(exposed_as))
        assert scrape.labels.get(exposed_as, set()) == set(metric["labels"]), name
        if metric["type"] == "histogram":
            assert scrape.buckets(name) == [*map(float, metric["buckets"]), math.inf], name
