"""Schemathesis hooks for the Tacit relay (loaded through SCHEMATHESIS_HOOKS).

They do two things only:

* teach schemathesis to send the raw body of `PATCH /v1/blobs/{blob_id}`
  (`application/offset+octet-stream`), which it cannot serialise by itself;
* make positive cases obey the few rules JSON Schema cannot state, and which the
  OpenAPI document states in prose: an id given twice in one list of objects is 400,
  a multicast may not name the sender (SENDER below). Negative cases are left alone.
"""

import os

import schemathesis

SENDER = os.environ.get("TACIT_ST_SENDER", "st-probe")

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


def _unique(items, key):
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        out.append(item)
    return out


def _device(item):
    return item.get("device_id") if isinstance(item, dict) else id(item)


def _prekey(item):
    return item.get("id") if isinstance(item, dict) else id(item)


def _keys(keys):
    if not isinstance(keys, dict):
        return
    for field in ("one_time_prekeys", "one_time_kem_prekeys"):
        if isinstance(keys.get(field), list):
            keys[field] = _unique(keys[field], _prekey)


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if label == "POST /v1/messages":
        for field in ("recipient_devices", "own_devices"):
            if isinstance(body.get(field), list):
                body[field] = _unique(body[field], _device)
    elif label == "POST /v1/multicast":
        recipients = body.get("recipients")
        if isinstance(recipients, list):
            kept = [
                r
                for r in recipients
                if not (isinstance(r, dict) and r.get("username") == SENDER)
            ]
            # minItems is 1: rename instead of leaving the list empty.
            if not kept and recipients:
                first = dict(recipients[0])
                first["username"] = "st-nobody"
                kept = [first]
            body["recipients"] = _unique(
                kept, lambda r: r.get("username") if isinstance(r, dict) else id(r)
            )
    elif label in (
        "POST /v1/accounts",
        "POST /v1/devices",
        "POST /v1/devices/link",
        "POST /v1/devices/sso",
    ):
        _keys(body.get("keys"))
    elif label == "PUT /v1/keys":
        _keys(body)
    return case
