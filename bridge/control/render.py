"""The human form of a status snapshot, laid out like ``mmcli -m 0``: one block per modem,
profile and server, a title on the left, right-aligned keys, ``--`` for what is not known."""

from collections import Counter
from typing import List, Tuple

UNKNOWN = "--"
#: the counter of every AT command that ended (bridge.at.protocol): summed by result here
AT_COMMAND = "at_command"
LINK_COLUMNS = ("slot", "local", "remote", "state", "sent", "received", "unacked", "age", "idle")


def shown(value) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def duration(seconds) -> str:
    """``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return UNKNOWN
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def table(rows: List[Tuple]) -> List[str]:
    """Rows of cells as left-aligned columns (the first row is the header)."""
    texts = [[shown(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in texts) for i in range(len(texts[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in texts]


def modem_block(modem: dict) -> List[Tuple[str, List[str]]]:
    state = f"{modem['state']}, for {duration(modem['state_seconds'])}"
    if modem["state_reason"]:
        state += f" ({modem['state_reason']})"
    if modem["recovering"]:
        state += f"; running: {modem['recovering']}"
    signal = UNKNOWN
    if modem["csq"] is not None:
        dbm = UNKNOWN if modem["signal_dbm"] is None else f"{modem['signal_dbm']} dBm"
        signal = f"{dbm} (CSQ {modem['csq']})"
    ips = [f"{ip} (context {context})" for context, ip in modem["local_ips"].items()]
    last = modem["last_recovery"]
    if last is None:
        recovery = "none"
    elif last["recovered"] is None:
        recovery = f"{last['cause']}, since {last['started']}, not back yet"
    else:
        recovery = f"{last['cause']}, at {last['started']}, back after {duration(last['seconds'])}"
    counters = [f"{counter['name']}{labels_text(counter['labels'])} {counter['value']}"
                for counter in modem["counters"] if counter["name"] != AT_COMMAND]
    return [("state", [state]), ("since", [shown(modem["state_since"])]),
            ("port", [shown(modem["port"])]), ("model", [shown(modem["model"])]),
            ("firmware", [shown(modem["firmware"])]), ("IMEI", [shown(modem["imei"])]),
            ("ICCID", [shown(modem["iccid"])]), ("IMSI", [shown(modem["imsi"])]),
            ("registration", [shown(modem["registration"])]),
            ("operator", [shown(modem["operator"])]), ("signal", [signal]),
            ("local IP", ips or [UNKNOWN]), ("last recovery", [recovery]),
            ("data used", [f"{modem['data_sent']} bytes sent, {modem['data_received']} "
                           "received"]),
            ("AT commands", [at_commands(modem["counters"])]),
            ("counters", counters or ["none"])]


def at_commands(counters: list) -> str:
    """The ``at_command{command,result}`` series (one per command name and result, for
    /metrics and --json) as one line of totals by result, the most frequent first:
    ``212 ok, 1 timeout``."""
    totals = Counter()
    for counter in counters:
        if counter["name"] == AT_COMMAND:
            totals[counter["labels"].get("result")] += counter["value"]
    ranked = sorted(totals.items(), key=lambda item: (-item[1], str(item[0])))
    return ", ".join(f"{total} {result}" for result, total in ranked) or "none"


def labels_text(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f"{key}={value}" for key, value in sorted(labels.items())) + "}"


def links_lines(links: list) -> List[str]:
    if not links:
        return ["none"]
    rows = [LINK_COLUMNS]
    for link in links:
        rows.append((link["slot"], link["local"], link["remote"], link["state"], link["sent"],
                     link["received"], link["unacked"], duration(link["age"]),
                     duration(link["idle"])))
    return table(rows)


def profile_block(profile: dict) -> List[Tuple[str, List[str]]]:
    listening = "listening" if profile["listening"] else "not listening"
    return [("listen", [f"{profile['listen']} ({listening})"]),
            ("remote", [profile["remote"]]), ("modem", [profile["modem"]]),
            ("waiting", [str(profile["waiting"])]), ("links", links_lines(profile["links"]))]


def server_block(server: dict) -> List[Tuple[str, List[str]]]:
    listening = "listening" if server["listening"] else "not listening"
    return [("module port", [f"{server['protocol']} {server['port']} ({listening})"]),
            ("forward", [server["forward"]]), ("modem", [server["modem"]]),
            ("links", links_lines(server["links"]))]


def render(snapshot: dict) -> str:
    """The whole snapshot as text."""
    blocks = ([(f"modem {m['name']}", modem_block(m)) for m in snapshot["modems"]]
              + [(f"profile {p['name']}", profile_block(p)) for p in snapshot["profiles"]]
              + [(f"server {s['name']}", server_block(s)) for s in snapshot["servers"]])
    if not blocks:
        return "no modem, profile or server"
    title_width = max(len(title) for title, _ in blocks)
    key_width = max(len(key) for _, fields in blocks for key, _ in fields)
    rule = "  " + "-" * (title_width + key_width + 40)
    lines = []
    for title, fields in blocks:
        lines.append(rule)
        for key, values in fields:
            for i, value in enumerate(values):
                label = f"{key:>{key_width}}:" if i == 0 else " " * (key_width + 1)
                lines.append(f"  {title:<{title_width}} | {label} {value}".rstrip())
                title = ""
    lines.append(rule)
    return "\n".join(lines)
