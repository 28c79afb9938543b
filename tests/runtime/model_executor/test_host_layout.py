"""The numpy host layout against a per-slice reference (the list-building loop it replaced)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.runtime.model_executor.host_layout import build_host_layout, logits_rows
from radixserve.runtime.scheduler.step import RequestSlice, future_token

PAGE = 4


def reference(slices: list[RequestSlice]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {k: [] for k in ("ids", "pos", "loc", "pages", "last", "rows")}
    kv_indptr, qo_indptr = [0], [0]
    for s in slices:
        num_pages = -(-s.seq_len // PAGE)
        row0 = len(out["ids"])
        out["ids"].extend(s.input_ids)
        for p in range(s.prefix_len, s.seq_len):
            out["pos"].append(p)
            out["loc"].append(s.page_table[p // PAGE] * PAGE + p % PAGE)
        out["pages"].extend(s.page_table[:num_pages])
        kv_indptr.append(len(out["pages"]))
        qo_indptr.append(len(out["ids"]))
        out["last"].append(s.seq_len - (num_pages - 1) * PAGE)
        first = s.extend_len - 1 if s.logits_from is None else s.logits_from
        out["rows"].extend(range(row0 + first, row0 + s.extend_len))
    out["kv_indptr"], out["qo_indptr"] = kv_indptr, qo_indptr
    return out


@st.composite
def slices_strategy(draw: st.DrawFn) -> list[RequestSlice]:
    result = []
    for i in range(draw(st.integers(1, 6))):
        prefix = draw(st.integers(0, 20))
        extend = draw(st.integers(1, 9))
        spare = draw(st.integers(0, 2))  # pages reserved ahead are not listed
        table = draw(
            st.lists(
                st.integers(0, 500),
                min_size=-(-(prefix + extend) // PAGE) + spare,
                max_size=-(-(prefix + extend) // PAGE) + spare,
            )
        )
        ids = draw(st.lists(st.integers(0, 1000), min_size=extend, max_size=extend))
        if draw(st.booleans()):
            ids[0] = future_token(i)
        logits_from = draw(st.one_of(st.none(), st.integers(0, extend - 1)))
        result.append(RequestSlice(ids, prefix, table, logits_from))
    return result


@settings(max_examples=150, deadline=None)
@given(slices_strategy())
def test_matches_the_per_slice_reference(slices: list[RequestSlice]) -> None:
    host = build_host_layout(slices, PAGE)
    ref = reference(slices)
    assert host.input_ids.tolist() == ref["ids"]
    assert host.positions.tolist() == ref["pos"]
    assert host.out_cache_loc.tolist() == ref["loc"]
    assert host.kv_page_indices.tolist() == ref["pages"]
    assert host.kv_indptr.tolist() == ref["kv_indptr"]
    assert host.qo_indptr.tolist() == ref["qo_indptr"]
    assert host.kv_last_page_len.tolist() == ref["last"]
    futures = [-1 - t for s in slices for t in s.input_ids[:1] if t < 0]
    assert host.max_future_index == max(futures, default=-1)
    rows, ranges = logits_rows(slices, host.qo_indptr)
    assert rows.tolist() == ref["rows"]
    assert ranges[-1][1] == len(ref["rows"]) and all(a < b for a, b in ranges)


def test_short_page_tables_and_empty_slices_are_errors() -> None:
    with pytest.raises(ValueError, match="2 needed for 5 tokens"):
        build_host_layout([RequestSlice([1, 2], 3, [0])], PAGE)
    with pytest.raises(ValueError, match="at least one new token"):
        build_host_layout([RequestSlice([], 3, [0])], PAGE)
