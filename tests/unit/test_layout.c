/*
 * test_layout.c - pins every offset of the shared-memory layout.
 *
 * Any change here is a change of the segment format other processes read:
 * it needs SHL_LAYOUT_VERSION bumped and the byte table in layout.h
 * redrawn.  The expected numbers are the table's, written out by hand.
 */
#include <stddef.h>

#include "testutil.h"

#define AT(type, field, off) CU_ASSERT_EQUAL(offsetof(type, field), (size_t)(off))

static void test_header(void)
{
	AT(struct shl_hdr, magic, 0);
	AT(struct shl_hdr, version, 8);
	AT(struct shl_hdr, header_size, 12);
	AT(struct shl_hdr, total_size, 16);
	AT(struct shl_hdr, created_unix_ns, 24);
	AT(struct shl_hdr, owner_uid, 32);
	AT(struct shl_hdr, max_pools, 36);
	AT(struct shl_hdr, max_models, 40);
	AT(struct shl_hdr, flags, 44);
	AT(struct shl_hdr, created_boot_ns, 48);
	AT(struct shl_hdr, reserved, 56);
	CU_ASSERT_EQUAL(sizeof(struct shl_hdr), 64);
	CU_ASSERT_EQUAL(SHL_MAGIC, 0x31544d494c4d4853ULL);
	CU_ASSERT_EQUAL(memcmp(&(uint64_t){SHL_MAGIC}, "SHMLIMT1", 8), 0);
	CU_ASSERT_EQUAL(SHL_LAYOUT_VERSION, 5);
}

static void test_lines(void)
{
	AT(struct shl_gen_line, gen, 0);
	AT(struct shl_gen_line, applies, 8);
	AT(struct shl_gen_line, applied_unix_ns, 16);
	AT(struct shl_spend_line, spend, 0);
	AT(struct shl_spend_line, exhausted, 8);
	AT(struct shl_spend_line, lifetime, 16);
	AT(struct shl_seg, hdr, 0x0);
	AT(struct shl_seg, genl, 0x40);
	AT(struct shl_seg, spendl, 0x80);
	AT(struct shl_seg, pools, 0x100);
	AT(struct shl_seg, cfg, 0x8100);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, cfg) + sizeof(struct shl_cfg_slot), 0x12140);
	AT(struct shl_seg, bases, 0x1C180);
	AT(struct shl_seg, pslots, 0x1F000);
	AT(struct shl_seg, ext, 0x180000);
	AT(struct shl_seg, pext, 0x181000);
	CU_ASSERT_EQUAL(sizeof(struct shl_seg_ext), 4096);
	CU_ASSERT_EQUAL(sizeof(struct shl_pool_ext), 1024);
	AT(struct shl_seg_ext, attach, 0);
	AT(struct shl_seg_ext, unknown, 64);
	/* The attach log (issue 13, defect 2). */
	AT(struct shl_attach_log, failures, 0);
	AT(struct shl_attach_log, last_unix_ns, 8);
	AT(struct shl_attach_log, last_uid, 16);
	AT(struct shl_attach_log, last_pid, 20);
	AT(struct shl_attach_log, last_error, 24);
	AT(struct shl_attach_log, reserved0, 28);
	AT(struct shl_attach_log, owner_refusals, 32);
	AT(struct shl_attach_log, reserved, 40);
	CU_ASSERT_EQUAL(sizeof(struct shl_attach_log), 64);
	AT(struct shl_seg_ext, cluster, 1088);
	AT(struct shl_pool_ext, learn, 0);
	CU_ASSERT_EQUAL(sizeof(struct shl_learn), 512);
	AT(struct shl_learn, count, 0);
	AT(struct shl_learn, ratio, 8);
	AT(struct shl_learn, owner, 16);
	AT(struct shl_learn, ring, 64);
	CU_ASSERT_EQUAL(SHL_LEARN_RING, 112);
	AT(struct shl_pool_ext, learn.ring[111], 508);
	AT(struct shl_pool_ext, observed, 512);
	/* The unknown-model table and the observed limits (issue 15). */
	AT(struct shl_unknown_tab, n, 0);
	AT(struct shl_unknown_tab, dropped, 4);
	AT(struct shl_unknown_tab, ent, 64);
	CU_ASSERT_EQUAL(sizeof(struct shl_unknown_ent), 80);
	AT(struct shl_unknown_ent, tag, 0);
	AT(struct shl_unknown_ent, seen, 8);
	AT(struct shl_unknown_ent, id, 16);
	CU_ASSERT_EQUAL(SHL_UNKNOWN_SLOTS, 12);
	CU_ASSERT_EQUAL(sizeof(struct shl_unknown_tab), 1024);
	AT(struct shl_observed, limit[0], 0);
	AT(struct shl_observed, limit[2], 16);
	AT(struct shl_observed, updated_unix_ns, 24);
	AT(struct shl_observed, changes, 32);
	AT(struct shl_observed, name_hash, 40);
	CU_ASSERT_EQUAL(sizeof(struct shl_observed), 64);
	AT(struct shl_cfg_slot, spend_epoch, 32);
	AT(struct shl_cfg_slot, unknown_policy, 40);
	AT(struct shl_cfg_slot, unknown_pool, 44);
	AT(struct shl_cfg_slot, pools, 64);
	CU_ASSERT_EQUAL(SHL_PF_NOFOLLOW, 0x40);
	CU_ASSERT_EQUAL(SHL_PF_PROVISIONAL, 0x80);
	CU_ASSERT_EQUAL(SHL_MF_CATCHALL, 0x4);
	AT(struct shl_pool_ext, cluster, 576);
	/* The slack area (layout 5; bucket.c, "Slack"). */
	AT(struct shl_pool_ext, slack, 832);
	AT(struct shl_pool_ext, slack.far, 832);
	AT(struct shl_pool_ext, slack.reserved, 840);
	AT(struct shl_pool_ext, slack.slot[0].low, 848);
	AT(struct shl_pool_ext, slack.slot[0].tag, 856);
	AT(struct shl_pool_ext, slack.slot[10].tag, 1016);
	CU_ASSERT_EQUAL(sizeof(struct shl_slack), 192);
	CU_ASSERT_EQUAL(SHL_SLACK_SLOTS, 11);
	CU_ASSERT_EQUAL(SHL_SLACK_SHIFT, 32);
	CU_ASSERT_EQUAL((offsetof(struct shl_seg, pext) + offsetof(struct shl_pool_ext, slack.slot)) % 16, 0);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, pext) + 64 * sizeof(struct shl_pool_ext), 0x191000);
	CU_ASSERT_EQUAL(SHL_SEG_SIZE, 0xB38000);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, bases) % 64, 0);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, pslots) % 64, 0);
	/* Every concurrently written line starts on a cache line. */
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, genl) % 64, 0);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, spendl) % 64, 0);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, pools) % 64, 0);
}

static void test_pool_runtime(void)
{
	/* Line 0: three (tat, refund ledger) pairs, each 16-byte aligned for
	 * the refund's cmpxchg16b, then the hold and the refusal count. */
	AT(struct shl_pool_rt, bkt[0].tat, 0);
	AT(struct shl_pool_rt, bkt[0].refunded, 8);
	AT(struct shl_pool_rt, bkt[1].tat, 16);
	AT(struct shl_pool_rt, bkt[1].refunded, 24);
	AT(struct shl_pool_rt, bkt[2].tat, 32);
	AT(struct shl_pool_rt, bkt[2].refunded, 40);
	CU_ASSERT_EQUAL(sizeof(struct shl_bkt), 16);
	CU_ASSERT_EQUAL(_Alignof(struct shl_bkt), 16);
	CU_ASSERT_EQUAL((offsetof(struct shl_seg, pools) + offsetof(struct shl_pool_rt, bkt)) % 16, 0);
	AT(struct shl_pool_rt, hold_until, 48);
	AT(struct shl_pool_rt, refused, 56);
	AT(struct shl_pool_rt, tokens_in, 64);
	AT(struct shl_pool_rt, tokens_out, 72);
	AT(struct shl_pool_rt, cache_read, 80);
	AT(struct shl_pool_rt, cache_write, 88);
	AT(struct shl_pool_rt, spend, 96);
	AT(struct shl_pool_rt, settled, 104);
	AT(struct shl_pool_rt, cancelled, 112);
	AT(struct shl_pool_rt, server_429, 120);
	AT(struct shl_pool_rt, win, 128);
	CU_ASSERT_EQUAL(sizeof(struct shl_win_slot), 24);
	AT(struct shl_pool_rt, admitted, 416);
	AT(struct shl_pool_rt, waited, 424);
	AT(struct shl_pool_rt, clamps, 432);
	AT(struct shl_pool_rt, pad, 440);
	AT(struct shl_pool_rt, horizon, 504); /* shl_reserve's latest future release */
	CU_ASSERT_EQUAL(sizeof(struct shl_pool_rt), 512);
}

static void test_config_slot(void)
{
	AT(struct shl_cfg_slot, npools, 0);
	AT(struct shl_cfg_slot, nmodels, 4);
	AT(struct shl_cfg_slot, spend_cap, 8);
	AT(struct shl_cfg_slot, gen, 16);
	AT(struct shl_cfg_slot, checksum, 24);
	AT(struct shl_cfg_slot, spend_epoch, 32); /* was zero padding; see internal.h */
	AT(struct shl_cfg_slot, pools, 64);
	AT(struct shl_cfg_slot, models, 8256);
	AT(struct shl_pool_cfg, name, 0);
	AT(struct shl_pool_cfg, limit, 32);
	AT(struct shl_pool_cfg, burst, 56);
	AT(struct shl_pool_cfg, price, 80);
	AT(struct shl_pool_cfg, flags, 120);
	AT(struct shl_pool_cfg, margin_ppm, 124); /* pools[].margin, parts per million */
	AT(struct shl_model_cfg, match, 0);
	AT(struct shl_model_cfg, pool, 64);
	AT(struct shl_model_cfg, flags, 68);
	AT(struct shl_model_cfg, price, 72);
	CU_ASSERT_EQUAL(sizeof(struct shl_pool_cfg), 128);
	CU_ASSERT_EQUAL(sizeof(struct shl_model_cfg), 128);
	CU_ASSERT_EQUAL(sizeof(struct shl_cfg_slot), 41024);
}

static void test_pslots(void)
{
	AT(struct shl_pool_base, cnt, 0);
	AT(struct shl_pool_base, win_epoch, 64);
	AT(struct shl_pool_base, win, 72);
	CU_ASSERT_EQUAL(sizeof(struct shl_pool_base), 128);
	AT(struct shl_pslot, owner, 0);
	AT(struct shl_pslot, lease, 8);
	AT(struct shl_pslot, lease_gen, 16);
	AT(struct shl_pslot, lifetime, 24);
	AT(struct shl_pslot, claims, 32);
	AT(struct shl_pslot, lease_seq, 40);
	AT(struct shl_pslot, pools, 64);
	CU_ASSERT_EQUAL(sizeof(struct shl_pslot), 22592);
	CU_ASSERT_EQUAL(SHL_PSLOTS, 512);
	CU_ASSERT_EQUAL(SHL_PSLOTS_FIRST, 64);
	AT(struct shl_seg, pslotl, 0x1E180);
	AT(struct shl_pslot_line, used, 0);
	CU_ASSERT_EQUAL(sizeof(struct shl_pslot_line), 64);
	AT(struct shl_seg, pslots_more, 0x191000);
	CU_ASSERT_EQUAL(sizeof(struct shl_seg), 0xB38000);
	AT(struct shl_pslot_pool, cnt, 0);
	AT(struct shl_pslot_pool, win, 64);
	CU_ASSERT_EQUAL(sizeof(struct shl_pslot_pool), 352);
	CU_ASSERT_EQUAL(SHL_PS_ADMITTED, 0);
	CU_ASSERT_EQUAL(SHL_PS_SETTLED, 1);
	CU_ASSERT_EQUAL(SHL_PS_CANCELLED, 2);
	CU_ASSERT_EQUAL(SHL_PS_TOKENS_IN, 3);
	CU_ASSERT_EQUAL(SHL_PS_TOKENS_OUT, 4);
	CU_ASSERT_EQUAL(SHL_PS_CACHE_READ, 5);
	CU_ASSERT_EQUAL(SHL_PS_CACHE_WRITE, 6);
	CU_ASSERT_EQUAL(SHL_PS_SPEND, 7);
	/* Each slot starts on a cache line: no two owners share one. */
	CU_ASSERT_EQUAL(sizeof(struct shl_pslot) % 64, 0);
}

void suite_layout(void)
{
	CU_pSuite s = CU_add_suite("layout", NULL, NULL);
	TU_ADD(s, test_header);
	TU_ADD(s, test_lines);
	TU_ADD(s, test_pool_runtime);
	TU_ADD(s, test_config_slot);
	TU_ADD(s, test_pslots);
}
