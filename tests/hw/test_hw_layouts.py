# amaranth: UnusedElaboratable=no
"""Shared gateware formats are built from one definition each (starc.isa, starc_hw.layouts)."""

from starc.isa import COMMAND_FIELDS
from starc_hw.attention import AttentionChannel
from starc_hw.bank import BankArray
from starc_hw.channel import Channel
from starc_hw.feeder import FedChannel
from starc_hw.hostlink import HostLink
from starc_hw.layouts import STATUS_NAMES, read_data_layout, status_members
from starc_sim.programs import TINY, load_config

CFG = load_config(None, TINY)


def test_read_data_layout_uses_command_field_widths():
    lay = read_data_layout(64)
    widths = dict(COMMAND_FIELDS)
    assert {n: lay[n].width for n in ("group", "bank", "col")} == {
        n: widths[n] for n in ("group", "bank", "col")}
    assert lay["data"].width == 64
    bits = CFG.org.column_bytes * 8
    assert BankArray(cfg=CFG).rdata.payload.shape() == read_data_layout(bits)
    assert HostLink(cfg=CFG, rows=4, cycle_width=32).rdata_layout == read_data_layout(bits)


def test_every_channel_reports_the_same_status_bundle():
    want = {k: v.shape for k, v in status_members(40).items()}
    for dut in (Channel(cfg=CFG, cycle_width=40), FedChannel(cfg=CFG, cycle_width=40),
                AttentionChannel(cfg=load_config(None, {}), head_dim=64, cycle_width=40)):
        members = dut.signature.members
        assert {k: members[k].shape for k in STATUS_NAMES} == want
