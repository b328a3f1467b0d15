#!/usr/bin/env python3
"""Build fuzz/seeds/<target>/ from the reference samples (tests/fixtures/samples) and typical
Dify bodies. Re-run after the samples change; the output is committed."""

import hashlib
import hmac
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent
SAMPLES = ROOT.parent / "tests" / "fixtures" / "samples"
SEEDS = ROOT / "seeds"
SOURCE_FIXTURES = ROOT.parent / "tests" / "fixtures" / "sources"


def write(target, name, data):
    path = SEEDS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def sse_streams():
    return sorted(SAMPLES.glob("*.sse"))


def payloads():
    """Every data payload of the sample streams, plus the webhook bodies."""
    out = []
    for stream in sse_streams():
        data = []
        for line in stream.read_bytes().replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line == b"" and data:
                joined = b"\n".join(data)
                if joined.strip():
                    out.append(joined)
                data = []
    for body in sorted(SAMPLES.glob("webhook_*_body.json")):
        out.append(body.read_bytes())
    return out


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)

    # sse_parser: [limit][n][n chunk lengths][stream]. 255 = the default 1 MiB limit.
    for stream in sse_streams():
        raw = stream.read_bytes()
        stem = stream.stem
        write("sse_parser", f"{stem}_whole", bytes([255, 0]) + raw)
        write("sse_parser", f"{stem}_split", bytes([255, 3, 7, 1, 64]) + raw)
        write("sse_parser", f"{stem}_small_limit", bytes([20, 2, 5, 13]) + raw)
    for name, raw in {
        "bom_crlf": b"\xef\xbb\xbfdata: a\r\n\r\nid: 7\rdata: b\r\rretry: 1500\n\n",
        "invalid_utf8": b"data: \xff\xfe\n\ndata: ok\n\n",
        "comments_and_fields": b": hi\nevent: summary\ndata\ndata:x\nid\nfoo: bar\n\n",
        "id_with_nul": b"id: a\x00b\ndata: x\n\n",
    }.items():
        write("sse_parser", name, bytes([255, 2, 1, 3]) + raw)

    # payload_decode: real payloads and lenient-decoding edge cases.
    for i, body in enumerate(payloads()):
        write("payload_decode", f"sample_{i:02}", body)
    for name, body in {
        "old_producer": {"type": "actions", "session_id": "ps_1", "actions": [
            {"title": "Page Load: Home", "canonical_url": "https://a.io/"}]},
        "wrong_types": {"type": "actions", "session_id": 12, "count": "3", "forwarded_at": "x",
                        "actions": [1, None, [], {"timestamp_start": "1785333600", "title": 5}]},
        "tour": {"type": "usertour_trigger", "session_id": "ps_1", "flow_id": "f1", "reason": "stuck"},
        "unknown_type": {"type": "page_link", "session_id": "ps_1"},
        "huge_numbers": {"type": "actions", "session_id": "ps_1", "actions": [
            {"timestamp_start": 1e308, "timestamp_end": -1e308, "index": 9.9e18}]},
        "summary_negative_replaces": {"type": "summary", "session_id": "ps_1", "summary": "s", "replaces": -4},
    }.items():
        write("payload_decode", name, json.dumps(body))
    write("payload_decode", "not_object", "[1,2]")
    write("payload_decode", "no_type", '{"session_id":"x"}')

    # retrieval_request: what Dify sends.
    def dify(query, knowledge_id="acme_prod", condition=None, top_k=4, threshold=0.0):
        body = {"retrieval_setting": {"top_k": top_k, "score_threshold": threshold},
                "query": query, "knowledge_id": knowledge_id}
        if condition is not ...:
            body["metadata_condition"] = condition
        return json.dumps(body)  # Python json.dumps, as Dify: \uXXXX escapes

    bodies = {
        "probe_empty": "",
        "probe_newer": json.dumps({"knowledge_id": "", "query": "",
                                   "retrieval_setting": {"top_k": 1, "score_threshold": 0.0}}),
        "plain": dify("where are my notifications?"),
        "null_top_k": dify("hi", top_k=None),
        "query_session_line": dify("session_id: 01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84\nwhere are my alerts?"),
        "query_email_line": dify("Email = \"Maria@Example.com\"\nhelp"),
        "query_candidate": dify("usr_7Qk2mN9x\nhow do I invite someone?"),
        "query_signed": dify("maria@example.com.1785400000.dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSEhISE\nhi"),
        "query_unresolved": dify("{{#sys.user_id#}}\nhi"),
        "unicode": dify("Caf\u00e9 \U0001F600 \u2014 o\u00f9 sont mes alertes ?"),
        "metadata_session": dify("hi", condition={"logical_operator": "and", "conditions": [
            {"name": "session_id", "comparison_operator": "is", "value": "ps_1"}]}),
        "metadata_or_list_names": dify("hi", condition={"logical_operator": "or", "conditions": [
            {"name": ["kind"], "comparison_operator": "in", "value": ["activity", "summary"]},
            {"name": "action_count", "comparison_operator": "\u2265", "value": 3},
            {"name": "start_time", "comparison_operator": "after", "value": "2026-07-29T13:00:00Z"}]}),
        "metadata_unresolved": dify("hi", condition={"conditions": [
            {"name": "email", "comparison_operator": "is", "value": "{{email}}"}]}),
        "metadata_empty_ops": dify("hi", condition={"conditions": [
            {"name": "kind", "comparison_operator": "not empty", "value": None},
            {"name": "title", "comparison_operator": "not contains", "value": "x"}]}),
        "metadata_null": dify("hi", condition=None),
        "knowledge_as_session": dify("hi", knowledge_id="01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84", condition=...),
        "string_settings": json.dumps({"knowledge_id": "k", "query": 5,
                                       "retrieval_setting": {"top_k": "3", "score_threshold": ""}}),
        # Regression: "NaN" parsed as a number gave top_k 0 and a NaN threshold.
        "nan_settings": json.dumps({"knowledge_id": "k", "query": "q",
                                    "retrieval_setting": {"top_k": "NaN", "score_threshold": "nan"}}),
    }
    for name, body in bodies.items():
        write("retrieval_request", name, body)

    # autoplay_api_decode: Autoplay's live-activity answers and lenient-decoding edge cases.
    def live(actions, **envelope):
        return json.dumps({"product_id": "prod_acme", "user_id": "user_42", "count": len(actions),
                           "as_of": 1785333700.5, "actions": actions, **envelope})

    def act(i, kind, title, ts, **extra):
        return {"type": kind, "title": title, "description": f"User did {title}",
                "timestamp_start": ts, "timestamp_end": ts + 0.5, "raw_url": "https://app.acme.io/x?y=1",
                "canonical_url": "https://app.acme.io/x", "index": i, **extra}

    for name, body in {
        "documented": live([act(0, "pageview", "Page Load: Dashboard", 1785333600.0),
                            act(1, "click", "Click Export CSV", 1785333604.0)]),
        "repeats": live([act(0, "click", "Click Save", 1785333600.0)] * 3),
        "named_sessions": live([act(0, "click", "a", 1785333600.0, session_id="ps_1"),
                                act(1, "click", "b", 1785333601.0, session_id="ps_2"),
                                act(2, "click", "c", 1785333602.0)], session_id="ps_env"),
        "empty": live([]),
        "wrong_types": json.dumps({"actions": [7, None, "x", [], {"type": 3, "index": "2",
                                   "timestamp_start": "1785333600", "timestamp_end": 1e308}],
                                   "as_of": "soon", "user_id": {"a": 1}}),
        "bare_array": json.dumps([act(0, "submit", "Submit form", 1785333600.0)]),
        "no_actions": json.dumps({"detail": "Invalid or missing API key"}),
    }.items():
        write("autoplay_api_decode", name, body)

    # webhook_verify: [secret len][mutation][secret][header len][header][body].
    secret = b"test-secret"
    for body_path in sorted(SAMPLES.glob("webhook_*_body.json")):
        body = body_path.read_bytes()
        sig = body_path.with_suffix(".sig").read_bytes().strip()
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        assert sig == expected, f"{body_path.name}: the sample signature does not match"
        stem = body_path.stem
        write("webhook_verify", f"{stem}_signed", bytes([len(secret), 5]) + secret + bytes([len(sig)]) + sig + body)
        bearer = b"Bearer " + secret
        write("webhook_verify", f"{stem}_bearer", bytes([len(secret), 9]) + secret + bytes([len(bearer)]) + bearer + body)
    write("webhook_verify", "empty_secret", bytes([0, 0, 9]) + b"Bearer  x" + b"{}")

    # elements_chain: the chains of the source fixtures, PostHog's own examples, edge cases.
    chains = {
        "posthog_example_classes": 'a.test-class.test-class2:attr__class="test-class test-class2"attr__href="http://test.com"href="http://test.com"nth-child="1"nth-of-type="1";span:nth-child="1"nth-of-type="1"',
        "posthog_example_escaped": 'a.small:data-attr="something \\" that; could mess up"href="/a-url"nth-child="1"nth-of-type="0"text="bla bla";button.btn.btn-primary:nth-child="0"nth-of-type="0"',
        "empty_text": 'button.btn:attr__aria-label="Notifications"nth-child="2"nth-of-type="1"text="";nav;body',
        "masked": 'span:text="*****";div:attr__data-amp-mask="";button:attr__title="Profile"',
        "unterminated": 'a:text="unterminated;b:text="x',
        "trailing_escape": 'a:text="ends with \\',
    }
    for fixture in sorted(SOURCE_FIXTURES.glob("posthog_*.json")):
        body = json.loads(fixture.read_text())
        event = body.get("event")
        chain = event.get("elements_chain") if isinstance(event, dict) else body.get("elements_chain")
        if chain:
            chains[fixture.stem] = chain
    for name, chain in chains.items():
        write("elements_chain", name, chain)

    # source_decode: [privacy byte][body]; every source fixture, and the token ones with the
    # allow-list on.
    for fixture in sorted(SOURCE_FIXTURES.glob("*.json")):
        body = fixture.read_bytes()
        write("source_decode", fixture.stem, bytes([0]) + body)
        if "token" in fixture.stem:
            write("source_decode", f"{fixture.stem}_allow_list", bytes([1]) + body)
    write("source_decode", "array_of_shapes", bytes([0]) + b'[{"event":"$pageview"},{"event":{"event":"$exception"}},{"event_type":"x","session_id":-1},{"type":"track","event":"a"},7]')


if __name__ == "__main__":
    main()
