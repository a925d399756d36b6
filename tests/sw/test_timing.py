"""Golden timing model: AttAcc command counts, analytic row period, every constraint on its own."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import config
from starc.golden import check, programs, timing
from starc.isa import MacArg, MoveFlag, Op, make_program

CFG = config.load()
T = CFG.timing


def sched(cmds, cfg=CFG, **kw):
    prog = make_program(cmds)
    s = timing.schedule(prog, cfg, **kw)
    check.check(s.program, s.issue, cfg)  # the independent checker agrees it is legal
    return s.issue.tolist()


# AttAcc trace generator (gen_trace_attacc_bank.py), dense, d 128, per channel (docs/presets.md)
@pytest.mark.parametrize("L, counts", [
    (2048, {"MACAB": 512, "MVSB": 80, "MVGB": 64, "WRGB": 8, "SFM": 1}),
    (4096, {"MACAB": 1024, "MVSB": 144, "MVGB": 128, "WRGB": 8, "SFM": 1}),
])
def test_dense_command_counts_match_attacc(L, counts):
    prog = programs.dense_program(CFG, L, 128)
    got = programs.command_counts(prog, CFG, per_pseudo_channel=True)
    for k, v in counts.items():
        assert got[k] == v, (k, got)


def test_stream_at_peak_equals_analytic_ceiling():
    n = 64
    s = timing.schedule(programs.stream_program(CFG, n), CFG, refresh=False)
    period = T.tRCD + 31 * T.tCCD_AB + T.tRTP_L + T.tRP  # 232, docs/presets.md
    # the last MAC issues at (n-1) periods + tRCD + 31 tCCD_AB; its result lands CL + pipeline later
    last_mac = (n - 1) * period + T.tRCD + 31 * T.tCCD_AB
    assert s.issue[-2] == last_mac
    assert s.total_cycles == last_mac + T.CL + CFG.pu.mac_pipeline
    mac_cycles = n * 32 * T.tCCD_AB
    assert mac_cycles / (n * period) == pytest.approx(CFG.streaming_ceiling())


def test_stream_with_refresh_pays_the_refresh_tax():
    n = 400  # about 18 tREFI
    s0 = timing.schedule(programs.stream_program(CFG, n), CFG, refresh=False)
    s1 = timing.schedule(programs.stream_program(CFG, n), CFG)
    check.check(s1.program, s1.issue, CFG)
    assert s1.total_cycles // T.tREFI - 1 <= s1.refreshes <= s1.total_cycles // T.tREFI
    extra = s1.total_cycles - s0.total_cycles
    # each refresh costs between tRFC and tRFC + one row period (it waits for the rows to close)
    assert s1.refreshes * T.tRFC <= extra <= s1.refreshes * (T.tRFC + 232)


def test_trcd_tras_trp_trc_single_bank():
    t = sched([(Op.ACTPB, 0, 0, 0, 5), (Op.RD, 0, 0, 3), (Op.PREPB, 0, 0), (Op.ACTPB, 0, 0, 0, 6)])
    assert t[1] == T.tRCD
    assert t[2] == max(T.tRAS, t[1] + T.tRTP_L)
    assert t[3] == max(t[2] + T.tRP, t[0] + T.tRC)


def test_write_recovery():
    t = sched([(Op.ACTPB, 0, 0, 0, 1), (Op.WR, 0, 0, 0, 0, 0), (Op.PREPB, 0, 0)])
    assert t[2] == max(T.tRAS, t[1] + T.tCWL + T.tBL + T.tWR)


def test_tccd_ab_between_all_bank_macs():
    t = sched([(Op.ACTAB, 0, 0, 0, 0)] + [(Op.MACAB, 0, 0, c) for c in range(4)])
    assert np.diff(t[1:]).tolist() == [T.tCCD_AB] * 3
    assert t[1] == T.tRCD


def test_tccd_l_and_s_between_group_macs():
    t = sched([(Op.ACTBG, 0, 0, 0, 0), (Op.ACTBG, 1, 0, 0, 0), (Op.MACBG, 0, 0, 0),
               (Op.MACBG, 1, 0, 0), (Op.MACBG, 1, 0, 1)])
    assert t[3] - t[2] == T.tCCD_S
    assert t[4] - t[3] == T.tCCD_L


def test_trrd_s_and_l():
    # groups 0 and 1 share rank 0 (different bank groups): tRRD_S; same group again: tRRD_L/tRC
    t = sched([(Op.ACTPB, 0, 0, 0, 0), (Op.ACTPB, 1, 0, 0, 0), (Op.ACTPB, 1, 1, 0, 0)])
    assert t[1] - t[0] == max(T.tRRD_S, T.row_cmd_cycles)
    assert t[2] - t[1] == max(T.tRRD_L, T.row_cmd_cycles)


def test_tfaw_fifth_activation_in_a_rank():
    cmds = [(Op.ACTPB, g, b, 0, 0) for g in range(4) for b in range(2)][:5]
    t = sched(cmds)
    assert t[4] == t[0] + T.tFAW
    # a different rank is not limited by rank 0's window
    t2 = sched(cmds[:4] + [(Op.ACTPB, 4, 0, 0, 0)])
    assert t2[4] < t2[0] + T.tFAW


def test_row_command_bus_occupancy():
    t = sched([(Op.ACTBG, 0, 0, 0, 0), (Op.ACTBG, 4, 0, 0, 0)])  # different ranks
    assert t[1] - t[0] == T.row_cmd_cycles


def test_refresh_is_inserted_when_due_and_waits_for_closed_banks():
    cfg = config.load(overrides={"timing.tREFI": 600})
    cmds = []
    for r in range(6):
        cmds += [(Op.ACTAB, 0, 0, 0, r)] + [(Op.MACAB, 0, 0, c) for c in range(32)] + [(Op.PREA,)]
    s = timing.schedule(make_program(cmds), cfg)
    check.check(s.program, s.issue, cfg)
    refs = s.issue[s.inserted]
    assert len(refs) >= 2
    ops = s.program["op"]
    for k in np.flatnonzero(s.inserted):
        nxt = k + 1  # an overdue batch is issued back to back, then the activation follows
        assert ops[nxt] in (Op.ACTAB, Op.REF) and s.issue[nxt] - s.issue[k] >= cfg.timing.tRFC
        assert ops[k - 1] in (Op.PREA, Op.REF)  # only ever with every bank closed
    # every due refresh has been issued by the end (none postponed past the last activation)
    last_act = s.issue[ops == Op.ACTAB][-1]
    assert len(refs) >= last_act // cfg.timing.tREFI


def test_mvsb_waits_for_mac_latency_and_sfm_for_mvsb():
    t = sched([(Op.WRGB, 0, 0, 0, 0, 0), (Op.ACTAB, 0, 0, 0, 0), (Op.MACAB, 0, 0, 0),
               (Op.MVSB, 0, 0, 0, 0, 1), (Op.SFM, 0, 0, 0, 0, 1), (Op.MVGB, 0, 0, 0)])
    lat = timing.mac_latency(CFG)
    assert t[3] == t[2] + lat
    assert t[4] == t[3] + CFG.pu.mv_cycles
    assert t[5] == t[4] + timing.sfm_cycles(CFG, 1)


def test_value_mac_waits_for_mvgb_of_its_slot():
    cmds = [(Op.SFM, 0, 0, 0, 0, 0), (Op.ACTAB, 0, 0, 0, 0), (Op.MVGB, 3, 0, int(MoveFlag.BUF)),
            (Op.MACAB, 0, 0, 0, 0, int(MacArg.VALUE)),
            (Op.MACAB, 0, 0, 1, 0, int(MacArg.VALUE | MacArg.BUF))]
    t = sched(cmds)
    assert t[4] >= t[2] + CFG.pu.mv_cycles


def test_bar_waits_for_completion():
    t = sched([(Op.ACTAB, 0, 0, 0, 0), (Op.MACAB, 0, 0, 0), (Op.BAR,)])
    assert t[2] == t[1] + timing.mac_latency(CFG)


def test_illegal_programs_name_the_command():
    with pytest.raises(timing.ProgramError, match=r"command #0 \(MACAB\): MACAB needs a row open"):
        timing.schedule(make_program([(Op.MACAB, 0, 0, 0)]), CFG)
    with pytest.raises(timing.ProgramError, match=r"command #1 \(ACTAB\)"):
        timing.schedule(make_program([(Op.ACTAB,), (Op.ACTAB,)]), CFG)


@pytest.mark.parametrize("idx", [1, 2, 5, 40])
def test_checker_names_the_violated_constraint(idx):
    prog = programs.dense_program(CFG, 512, 128)
    s = timing.schedule(prog, CFG)
    issue = s.issue.copy()
    issue[idx:] -= 1  # one command (and everything after it) one cycle too early
    with pytest.raises(check.TimingViolation, match=rf"command #{idx} .* violates"):
        check.check(s.program, issue, CFG)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_group_programs_are_legal_per_checker(data):
    """Property: whatever legal-shaped program we build, the schedule passes the checker."""
    cfg = config.load(overrides={"timing.tREFI": 700})
    G = cfg.org.groups_per_channel
    cmds = [(Op.WRGB, 0, 0, 0, 0, 0)]
    for _ in range(data.draw(st.integers(1, 5))):
        groups = sorted(data.draw(st.sets(st.integers(0, G - 1), min_size=1, max_size=G)))
        for g in groups:
            cmds.append((Op.ACTBG, g, 0, 0, data.draw(st.integers(0, 100))))
        for c in range(data.draw(st.integers(1, 8))):
            for g in groups:
                cmds.append((Op.MACBG, g, 0, c))
        for g in groups:
            cmds.append((Op.MVSB, g, 0, 0, 0, 0xFFFF))
            cmds.append((Op.PREBG, g))
    cmds.append((Op.SFM, 0, 0, 0, 0, 0))
    s = timing.schedule(make_program(cmds), cfg)
    assert check.violations(s.program, s.issue, cfg) == []
    assert (np.diff(s.issue) >= 1).all()


def test_dense_schedule_breakdown_sums_to_total():
    s = timing.schedule(programs.dense_program(CFG, 4096, 128), CFG)
    assert sum(s.breakdown.values()) == s.total_cycles
    floor = 2 * 4096 * 128 * 2 / (64 * 32 / T.tCCD_AB)
    assert s.total_cycles >= floor / CFG.streaming_ceiling()  # nothing beats the physical floor


def test_explicit_refresh_blocks_activation_for_trfc():
    t = sched([(Op.REF,), (Op.ACTAB,)])
    assert t[1] - t[0] == T.tRFC


def test_column_spacing_from_host_access_to_mac():
    t = sched([(Op.ACTBG, 0, 0, 0, 0), (Op.RD, 0, 0, 1), (Op.MACBG, 0, 0, 0)])
    assert t[2] - t[1] == T.tCCD_L
    # the checker names the constraint when the MAC comes too early
    with pytest.raises(check.TimingViolation, match=r"RD/WR -> MAC"):
        check.check(make_program([(Op.ACTBG, 0, 0, 0, 0), (Op.RD, 0, 0, 1),
                                  (Op.MACBG, 0, 0, 0)]), np.array([0, 19, 20]), CFG)
