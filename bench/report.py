"""Targets (issue 7), the printed table and the JSON written to bench/results/."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    figure: str
    value: float | None  # None: not measured (see note)
    target: str
    met: bool | None
    unit: str = "ms"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


PER_CALL_FIGURES = ("per_call_start", "per_turn", "per_call_end", "per_call", "per_turn_all_in")


def fmt(value: float | None, unit: str = "ms") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "/s":
        return f"{value:.0f}/s"
    if unit == "count":
        return f"{value:.2f}"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def degraded_note(levels: dict[str, Any]) -> str:
    """Say so when replies were answered without the (fake) LLM: the path measured is shorter."""
    degraded = sum(r.get("degraded", 0) for r in levels.values())
    answered = sum(r.get("n", 0) for r in levels.values())
    if not degraded:
        return ""
    return f"{degraded}/{answered} replies came without the LLM (shorter path)"


def _status(block: dict[str, Any]) -> str:
    status = str(block.get("status", ""))
    return "" if status == "ok" else status


def checks(results: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    s = results["scenarios"]
    levels = results["levels"]  # the plan's (1, 50, 200), or what --levels chose
    mid, top = levels[min(1, len(levels) - 1)], levels[-1]
    for provider in ("generic-http", "twilio"):
        ratio = _get(s, "turn", provider, "levels", str(mid), "ratio_p50")
        note = degraded_note(_get(s, "turn", provider, "levels") or {})
        out.append(
            Check(
                f"turn {provider} p50 / floor p50 @{mid}",
                ratio,
                "<= 4x",
                None if ratio is None else ratio <= 4,
                "x",
                note,
            )
        )
        top_run = _get(s, "turn", provider, "levels", str(top)) or {}
        p99 = top_run.get("p99")
        met = None if p99 is None else p99 <= 50
        if top_run and p99 is None:
            met, note = False, top_run.get("note", "no turn answered")
        out.append(Check(f"turn {provider} p99 @{top}", p99, "<= 50 ms", met, note=note))
    stream = s.get("stream", {})
    p99 = stream.get("added_p99")
    out.append(
        Check(
            "stream: LLM first token -> first SSE byte, added p99",
            p99,
            "<= 5 ms",
            None if p99 is None else p99 <= 5,
            note=_status(stream),
        )
    )
    for key, label in (("all", "every event, /ws?batch=1"), ("per_call", "own call")):
        fan = _get(s, "fanout", key) or {}
        p99 = fan.get("p99")
        delivered = fan.get("delivered_ratio")
        met = None if p99 is None else (p99 <= 50 and (delivered or 0) >= 0.999)
        if fan.get("connect_errors"):
            met = False if p99 is not None else None
        note = _status(fan) or _status(_get(s, "fanout") or {})
        if delivered is not None:
            note = f"{delivered:.1%} delivered to live subscribers; {note}".strip("; ")
        note = note or _status(_get(s, "fanout") or {})
        out.append(
            Check(
                f"fan-out p99, {fan.get('subscribers', '?')} subscribers ({label})",
                p99,
                "<= 50 ms",
                met,
                note=note,
            )
        )
    mem = s.get("memory", {})
    valid = _status(mem) == ""
    for key, label in (
        ("recall_p50", "recall: vector query, caller filter"),
        ("recent_p50", "recent: a call's prefetch"),
    ):
        p50 = mem.get(key) if valid else None
        out.append(
            Check(
                f"memory retrieval p50 @{mem.get('memories', 'n/a')} ({label})",
                p50,
                "<= 10 ms",
                None if p50 is None else p50 <= 10,
                note=_status(mem),
            )
        )
    store = s.get("callstore", {})
    for provider in ("generic-http", "twilio"):
        run = store.get(provider) or {}
        per_turn = run.get("per_turn") if _status(run) == "" else None
        out.append(
            Check(
                f"call-store round trips per turn (Redis, {provider})",
                per_turn,
                "<= 3",
                None if per_turn is None else per_turn <= 3,
                "count",
                _status(run) or _status(store) or ("" if run else "n/a (not run)"),
            )
        )
    out += relay_checks(s.get("relay") or {})
    for svc, limit in (("gateway", 1.5), ("orchestrator", 4.0)):
        ready = _get(s, "startup", svc, "median_s")
        out.append(
            Check(
                f"{svc} cold start -> /health 200 (median of runs)",
                ready,
                f"<= {limit} s",
                None if ready is None else ready <= limit,
                "s",
                _status(_get(s, "startup") or {}),
            )
        )
    return out


def _top(levels: dict[str, Any] | None) -> str | None:
    return max(levels, key=int) if levels else None


def relay_checks(relay: dict[str, Any]) -> list[Check]:
    """Issue 18's relay targets: at the top relay level, and beside the peer at its top level."""
    out: list[Check] = []
    status = _status(relay) or ("" if relay else "n/a (not run)")
    top = _top(relay.get("relay"))
    run = (relay.get("relay") or {}).get(top) or {} if top else {}

    def note_of(r: dict[str, Any], extra: str = "") -> str:
        bits = [status] if status else []
        if r.get("errors"):
            bits.append(f"{r['errors']} errors")
        if r.get("dropped"):
            bits.append(
                f"{r['dropped']} calls dropped by the gateway "
                f"({r.get('dropped_after_interrupt', 0)} after an interrupt)"
            )
        if r.get("degraded"):
            bits.append(f"{r['degraded']} replies not the model's")
        if extra:
            bits.append(extra)
        return "; ".join(bits)

    p99 = _get(run, "added", "p99")
    out.append(
        Check(
            f"relay: LLM first token -> first text frame, added p99 @{top or '?'}",
            p99,
            "<= 5 ms",
            None if p99 is None else p99 <= 5,
            note=note_of(run),
        )
    )
    p99 = _get(run, "interrupt_close", "p99")
    extra = ""
    if run.get("not_closed"):
        extra = f"{run['not_closed']} model requests not closed by the barge-in"
    met = None if p99 is None else (p99 <= 20 and not run.get("not_closed"))
    out.append(
        Check(
            f"relay: interrupt -> LLM request closed, p99 @{top or '?'}",
            p99,
            "<= 20 ms",
            met,
            note=note_of(run, extra),
        )
    )
    cmp = relay.get("vs_peer") or {}
    level = _top(cmp)
    row = cmp.get(level) or {} if level else {}
    peer_status = _status(relay.get("peer") or {}) or status or ("" if row else "n/a (no peer run)")
    diff = row.get("added_p50_diff_ms")
    out.append(
        Check(
            f"relay: added p50, ours - twilio-agent-connect's @{level or '?'}",
            diff,
            "<= 1 ms",
            None if diff is None else diff <= 1,
            note=peer_status
            or f"ours {fmt(row.get('added_p50_ours'))}, theirs {fmt(row.get('added_p50_peer'))}",
        )
    )
    ratio = row.get("cpu_ratio")
    out.append(
        Check(
            f"relay: CPU per turn, our 2 services / twilio-agent-connect @{level or '?'}",
            ratio,
            "<= 1.5x",
            None if ratio is None else ratio <= 1.5,
            "x",
            peer_status
            or f"ours {fmt(row.get('cpu_per_turn_ours'))}, "
            f"theirs {fmt(row.get('cpu_per_turn_peer'))}",
        )
    )
    return out


def relay_lines(relay: dict[str, Any]) -> list[str]:
    """The relay scenario's figures, per level: ours (relay), ours (<Gather>), the peer."""
    if not relay or (not relay.get("relay") and not relay.get("gather")):
        return [f"relay: {relay.get('status', 'not run')}"] if relay else []
    fake = relay.get("fake_llm") or {}
    lines = [
        "",
        f"ConversationRelay (fake LLM: first token after {fake.get('first_token_ms')} ms, then "
        f"one every {fake.get('token_ms')} ms; ms):",
    ]
    head = (
        f"{'who':<24}{'conc':>5}{'turns':>7}{'added p50':>11}{'p99':>8}{'1st word p50':>14}"
        f"{'p99':>8}{'intr->closed p50':>18}{'p99':>8}{'n':>5}{'err':>5}{'CPU/turn':>10}"
    )
    lines += [head, "-" * len(head)]

    def ms(v: Any) -> str:
        return "n/a" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"

    def row(who: str, level: str, r: dict[str, Any]) -> str:
        added, word = r.get("added") or {}, r.get("first_word") or {}
        close = r.get("interrupt_close") or {}
        turns = r.get("turns", word.get("n", 0))
        return (
            f"{who:<24}{level:>5}{turns:>7}{ms(added.get('p50')):>11}{ms(added.get('p99')):>8}"
            f"{ms(word.get('p50')):>14}{ms(word.get('p99')):>8}{ms(close.get('p50')):>18}"
            f"{ms(close.get('p99')):>8}{close.get('n', '') if close else '':>5}"
            f"{r.get('errors', 0):>5}{ms(r.get('cpu_ms_per_turn_total')):>10}"
        )

    for level, r in (relay.get("relay") or {}).items():
        lines.append(row("ours, relay", level, r))
    for level, r in (relay.get("gather") or {}).items():
        lines.append(row("ours, webhook <Gather>", level, r))
    peer = relay.get("peer") or {}
    for level, r in (peer.get("levels") or {}).items():
        lines.append(row("twilio-agent-connect", level, r))
    if _status(peer):
        lines.append(f"twilio-agent-connect: {peer['status']}")
    for level, r in ((relay.get("floor") or {}).get("levels") or {}).items():
        lines.append(row("floor (bare relay)", level, r))
    lines.append(
        "  CPU/turn: ms of CPU of the gateway + orchestrator (ours) or of the peer's one process "
        "per prompt sent, over the measured window (webhook <Gather>: the whole run);"
    )
    lines.append(
        "  webhook <Gather>: 1st word = the gather action's answer (the whole reply's TwiML); "
        "floor: bench/relay_floor.py, one hop, no checks, nothing stored"
    )
    for level, r in (relay.get("relay") or {}).items():
        bits = [f"{k} {v:.2f}" for k, v in (r.get("cpu_ms_per_turn") or {}).items()]
        lines.append(
            f"  ours @{level}: CPU/turn {', '.join(bits)}; interrupts {r.get('interrupts', 0)}, "
            f"not closed {r.get('not_closed', 0)}, model done first "
            f"{r.get('finished_before_interrupt', 0)}; calls {r.get('calls', 0)}, dropped "
            f"{r.get('dropped', 0)} ({r.get('dropped_after_interrupt', 0)} after an interrupt); "
            f"unmatched {r.get('unmatched', 0)}, degraded {r.get('degraded', 0)}"
        )
    for level, r in ((relay.get("peer") or {}).get("levels") or {}).items():
        lines.append(
            f"  peer @{level}: interrupts {r.get('interrupts', 0)}, "
            f"not closed {r.get('not_closed', 0)}, model done first "
            f"{r.get('finished_before_interrupt', 0)}; unmatched {r.get('unmatched', 0)}, "
            f"degraded {r.get('degraded', 0)}"
        )
    return lines


def _turn_runs(
    rows: list[tuple[str, dict[str, Any] | None]],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """("turn twilio level @50", run result) for every turn run, paced then saturated."""
    for name, block in rows:
        for key in ("levels", "saturated"):
            for level, r in ((block or {}).get(key) or {}).items():
                if isinstance(r, dict):
                    yield f"{name} {key[:5]} @{level}", r


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    s = results["scenarios"]
    lines.append(f"machine: {results['machine']['summary']}")
    lines.append(f"mode: {results['mode']}   (absolute figures are noisy on a shared machine;")
    lines.append("       ratios to the floor measured in the same run are the stable figures)")
    lines.append(
        f"orchestrator's Chroma: {results.get('chroma', 'embedded')} "
        "(BENCH_CHROMA=server: a `chroma run` server, as the deployments run it)"
    )
    think = _get(s, "floor", "think_s")
    if think:
        lines.append(
            f"paced calls: each call pauses {think[0]:g}-{think[1]:g} s between turns (the caller "
            "speaking and listening); 1 call runs back to back"
        )
        if _get(s, "floor", "churn"):
            lines.append(
                "  in steady state: calls ending and new ones starting all through the window "
                "(their untimed start and end requests are load the services carry)"
            )
        else:
            lines.append("  all calls start in the warm-up and end after the window (--no-churn)")
    lines.append("")
    head = f"{'load':<22}{'conc':>5}{'n':>7}{'p50':>10}{'p99':>10}{'max':>10}{'thru':>9}"
    head += f"{'err':>6}{'degr':>6}{'p50/floor':>11}{'p99/floor':>11}"
    lines.append(head)
    lines.append("-" * len(head))
    rows = [("floor", _get(s, "floor"))]
    rows += [(f"turn {p}", _get(s, "turn", p)) for p in ("generic-http", "twilio")]
    for key, title in (
        ("levels", "paced calls"),
        ("saturated", "saturation (no pause between turns): capacity, not latency"),
    ):
        lines.append(f"  {title}")
        for name, block in rows:
            if not block:
                continue
            if block.get("status") and not block.get(key):
                lines.append(f"{name:<22}{block['status']}")
                continue
            for level, r in (block.get(key) or {}).items():
                lines.append(
                    f"{name:<22}{level:>5}{r.get('n', 0):>7}{fmt(r['p50']):>10}{fmt(r['p99']):>10}"
                    f"{fmt(r['max']):>10}{fmt(r['throughput'], '/s'):>9}{r['errors']:>6}"
                    f"{r.get('degraded', 0):>6}{fmt(r.get('ratio_p50'), 'x'):>11}"
                    f"{fmt(r.get('ratio_p99'), 'x'):>11}"
                )
    runs = list(_turn_runs(rows[1:]))
    cpu_lines = []
    for label, r in runs:
        cpu = r.get("cpu_ms_per_turn")
        if cpu:
            shares = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            cpu_lines.append(f"  {label}: {shares}")
    if cpu_lines:
        lines.append("")
        lines.append("CPU ms per turn (process CPU during the run / turns sent, warm-up and the")
        lines.append("untimed call start/end requests included):")
        lines.extend(cpu_lines)
    lag_lines = []
    for label, r in runs:
        lag = r.get("loop_blocked")
        if lag:
            parts = ", ".join(
                f"{svc} {v['over_100ms']} (>50 ms: {v['over_50ms']}, {v['lag_s']:.2f} s)"
                if "ticks" in v
                else f"{svc} {v.get('status', 'n/a')}"
                for svc, v in lag.items()
            )
            lag_lines.append(f"  {label}: {parts}")
    if lag_lines:
        lines.append("")
        lines.append("event loop blocked: 100 ms ticks over 100 ms late in the run (over 50 ms,")
        lines.append("and the lag summed over all ticks):")
        lines.extend(lag_lines)
    lines.append("")
    extra = []
    stream = s.get("stream", {})
    if stream.get("added_p50") is not None:
        extra.append(
            f"stream added: p50 {fmt(stream['added_p50'])}, p99 {fmt(stream['added_p99'])}, "
            f"max {fmt(stream.get('added_max'))} (n={stream.get('n')})"
        )
    direct = stream.get("direct_turn")
    if direct and direct.get("n"):
        stages = ", ".join(f"{k} {v:.2f}" for k, v in (stream.get("stage_p50_ms") or {}).items())
        extra.append(
            f"orchestrator alone (JSON turn, 1 conversation): p50 {fmt(direct['p50'])}, p99 "
            f"{fmt(direct['p99'])}; its stage timings p50 (ms): {stages}"
        )
    mem = s.get("memory", {})
    if mem.get("recall_p50") is not None:
        extra.append(
            f"memory @{mem.get('memories')}: recent() p50 {fmt(mem.get('recent_p50'))} p99 "
            f"{fmt(mem.get('recent_p99'))}, for a caller with 200 memories p50 "
            f"{fmt(mem.get('recent_heavy_p50'))} p99 {fmt(mem.get('recent_heavy_p99'))}; "
            f"recall p50 {fmt(mem['recall_p50'])} p99 "
            f"{fmt(mem.get('recall_p99'))}; bare Chroma query p50 {fmt(mem.get('chroma_p50'))} "
            f"p99 {fmt(mem.get('chroma_p99'))}; store write p50 {fmt(mem.get('store_write_p50'))} "
            f"p99 {fmt(mem.get('store_write_p99'))}"
        )
    for key in ("all", "all_frames", "per_call", "all_low"):
        fan = _get(s, "fanout", key)
        if fan and fan.get("p50") is not None:
            shape = fan.get("mode", key) + (", batch=1" if fan.get("batch") else ", a frame each")
            extra.append(
                f"fan-out ({shape}, {fan.get('subscribers')} subscribers): "
                f"{fan.get('rate_achieved', 0):.0f} events/s published, "
                f"p50 {fmt(fan['p50'])} p99 {fmt(fan['p99'])} max {fmt(fan.get('max'))}, "
                f"delivered {fan.get('delivered_ratio', 0):.1%}, stalled subscriber "
                f"{fan.get('stalled_outcome', '?')}, dropped {fan.get('dropped', 0)}"
            )
    for provider in ("generic-http", "twilio"):
        run = _get(s, "callstore", provider)
        if run and run.get("per_turn") is not None:
            n = {k: fmt(run[k], "count") for k in PER_CALL_FIGURES}
            extra.append(
                f"call-store round trips (Redis, {provider}, {run['calls']} calls of "
                f"{run['turns_per_call']} turns): per call start {n['per_call_start']}, per turn "
                f"{n['per_turn']}, per call end {n['per_call_end']}; a whole call "
                f"{n['per_call']} = {n['per_turn_all_in']} per turn"
            )
    rss = s.get("rss", {})
    for svc in ("gateway", "orchestrator"):
        r = rss.get(svc)
        if r:
            extra.append(
                f"RSS {svc}: idle {fmt(r.get('idle_mb'), 'MB')}, "
                f"under {results['levels'][-1]}-call load {fmt(r.get('load_mb'), 'MB')}"
            )
    for svc in ("gateway", "orchestrator"):
        st = _get(s, "startup", svc)
        if st and st.get("runs_s"):
            starts = ", ".join(f"{x:.2f}" for x in st["runs_s"])
            extra.append(f"start-up {svc}: runs {starts} s")
    lines += extra
    lines += relay_lines(s.get("relay") or {})
    lines.append("")
    head = f"{'target check':<66}{'value':>11}  {'target':<10}{'status':<8}note"
    lines.append(head)
    lines.append("-" * len(head))
    for c in results["checks"]:
        status = {True: "met", False: "MISSED", None: "n/a"}[c["met"]]
        lines.append(
            f"{c['figure']:<66}{fmt(c['value'], c['unit']):>11}  {c['target']:<10}{status:<8}"
            f"{c['note']}"
        )
    return "\n".join(lines)
