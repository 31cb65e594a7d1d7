"""bench.loadgen.SSEStream: the SSE parser of the hot path, fed byte streams split at every possible point.

The fast path (byte scans) and the slow path (orjson per event) must agree exactly on every stream.
"""
from __future__ import annotations

import itertools

import orjson
import pytest

from bench.loadgen import SSEStream


def content(i: int, *, chat=False, pretty=False) -> bytes:
    choice = {"index": 0, "delta": {"content": f"t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
    obj = {"id": "cmpl-1", "object": "text_completion", "choices": [choice], "usage": None}
    return b"data: " + (orjson.dumps(obj, option=orjson.OPT_INDENT_2).replace(b"\n", b"") if pretty
                        else orjson.dumps(obj)) + b"\n\n"


USAGE = b'data: {"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}\n\n'
DONE = b"data: [DONE]\n\n"


def feed_reads(reads: list[bytes], fast: bool) -> tuple[SSEStream, str | None]:
    s = SSEStream(fast=fast)
    for t, r in enumerate(reads, start=1):
        s.feed(r, t * 1000)
    return s, s.finish()


def summary(s: SSEStream, err):
    return (s.chunks, s.t_first, s.t_last, s.itl_max, list(s.gaps), s.zero_gaps, s.usage, s.done, err)


STREAMS = {
    "vllm": b"".join(content(i) for i in range(4)) + USAGE + DONE,
    "chat": b"".join(content(i, chat=True) for i in range(4)) + USAGE + DONE,
    "crlf": (b"".join(content(i) for i in range(4)) + USAGE + DONE).replace(b"\n", b"\r\n"),
    "comments": b": ping\n\n" + content(0) + b"event: message\nid: 3\n" + content(1) + content(2) + content(3)
                + USAGE + DONE,
    "pretty": b"".join(content(i, pretty=True) for i in range(4)) + USAGE + DONE,
    "usage_every_chunk": b"".join(content(i).replace(b'"usage":null', b'"usage":{"completion_tokens":%d}' % (i + 1))
                                  for i in range(4)) + DONE,
    "no_trailing_blank_line": b"".join(content(i) for i in range(4)) + USAGE + b"data: [DONE]",
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_every_split_agrees_with_one_read_and_with_the_slow_path(name):
    stream = STREAMS[name]
    whole_fast = summary(*feed_reads([stream], fast=True))
    assert whole_fast == summary(*feed_reads([stream], fast=False))
    chunks, _, _, _, _, _, usage, done, err = whole_fast
    assert err is None and done and chunks == 4 and usage["completion_tokens"] == 4
    # Every 2-way and a sample of 3-way splits: same chunk count, usage, errors on both paths.
    cuts = [(i,) for i in range(1, len(stream))] + list(itertools.combinations(range(1, len(stream), 37), 2))
    for cut in cuts:
        edges = (0, *cut, len(stream))
        reads = [stream[a:b] for a, b in zip(edges, edges[1:])]
        fast, slow = summary(*feed_reads(reads, True)), summary(*feed_reads(reads, False))
        assert fast == slow, cut
        assert fast[0] == 4 and fast[-1] is None and fast[6]["completion_tokens"] == 4, cut


def test_timing_one_clock_per_read():
    # Read 1 (t=1000): chunks 0,1; read 2 (t=2000): chunk 2; read 3 (t=3000): chunk 3 + usage + done.
    s, err = feed_reads([content(0) + content(1), content(2), content(3) + USAGE + DONE], fast=True)
    assert err is None
    assert (s.t_first, s.t_last, s.chunks) == (1000, 3000, 4)
    assert list(s.gaps) == [1000, 1000] and s.zero_gaps == 1 and s.itl_max == 1000


@pytest.mark.parametrize("fast", [True, False])
def test_failures(fast):
    s, err = feed_reads([content(0) + content(1) + DONE], fast)
    assert err.startswith("server sent no usage") and s.chunks == 2
    s, err = feed_reads([content(0) + content(1)], fast)
    assert err.startswith("stream ended before [DONE]")
    s, err = feed_reads([USAGE + DONE], fast)
    assert err == "no content chunk received"
    s, err = feed_reads([content(0) + b'data: {"error": {"message": "boom", "code": 500}}\n\n' + DONE], fast)
    assert err == "server error event: boom" and s.chunks == 1
    s, err = feed_reads([content(0) + b'data: {"object": "error", "message": "bad"}\n\n'], fast)
    assert err == "server error event: bad"
    s, err = feed_reads([content(0) + b"data: [1, 2]\n\n" + DONE], fast)
    assert err.startswith("unexpected SSE payload")
    with pytest.raises(orjson.JSONDecodeError):
        feed_reads([b'data: {"choices": [{"text": "x"\n\n'], fast)


def test_token_text_that_looks_like_markers_is_still_exact():
    # A token whose text is literally "error" or contains "usage" must still count as content.
    tricky = [b'data: {"choices":[{"text":"error"}],"usage":null}\n\n',
              b'data: {"choices":[{"text":"\\"usage\\":{"}],"usage":null}\n\n']
    for fast in (True, False):
        s, err = feed_reads([b"".join(tricky) + USAGE + DONE], fast)
        assert err is None and s.chunks == 2


# ---------------------------------------------------- stream_usage "finish-length" (llama-cpp-python's server)

def _llama_event(text: str, finish: str | None) -> bytes:
    # the exact shape llama-cpp-python 0.3.36 streams: json.dumps with spaces, no usage, [DONE] at the end
    return ('data: {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": '
            f'[{{"text": "{text}", "index": 0, "logprobs": null, "finish_reason": '
            f'{"null" if finish is None else chr(34) + finish + chr(34)}}}]}}\r\n\r\n').encode()


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("finish,ok", [("length", True), ("stop", False)])
def test_finish_length_mode_accepts_only_a_stream_that_ran_to_max_tokens(fast, finish, ok):
    body = b"".join([_llama_event("a", None), _llama_event(" b", None), _llama_event("", finish), b"data: [DONE]\r\n\r\n"])
    for cut in range(1, len(body), 7):  # split anywhere: the finish marker may straddle two reads
        s = SSEStream(fast=fast)
        s.want_finish = True
        s.feed(body[:cut], 1)
        s.feed(body[cut:], 2)
        err = s.finish()
        assert (err is None) == ok, (cut, err)
        if not ok:
            assert "did not end at max_tokens" in err
    plain = SSEStream(fast=fast)  # the default mode: no usage is an error, whatever the ending
    plain.feed(body, 1)
    assert "server sent no usage" in plain.finish()
