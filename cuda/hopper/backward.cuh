// hopper backend, backward: one warp-specialized, persistent TMA + wgmma
// kernel template for both passes, dQ (query-major) and dK/dV (key-major).
//
// Both passes have the same shape. A work item is a block tile of 128
// tokens of one dilation group (queries for dQ, keys for dK/dV) whose two
// operands X and Y (Q and dO; K and V) stay in shared memory, while the
// producer streams the ring tiles of 64 tokens the block interacts with
// (K and V over the neighborhood box; Q and dO over the inverse-neighborhood
// box, once per query head of the kv head) through a ring of stages. Each of
// the two consumer warpgroups owns 64 block rows:
//   S  = X Xr^T, dP = Y Yr^T              wgmma, both operands in shared memory
//   P  = exp2(S scale log2e - lse),  dS = P (dP - delta)        registers
//   dQ += dS K                             (dQ pass)       A from registers,
//   dK += dS^T Q,  dV += P^T dO            (dK/dV pass)    B transposed
// In the dK/dV pass S and dP are the transposed products (rows are keys), so
// lse and delta = rowsum(dO * O) (stats.cuh) are per column; a producer warp
// stages them next to each Q/dO tile. Masks are the forward's (MaskTable)
// with each row's window (dQ) or inverse window (dK/dV): exact, as windows
// are monotone (window.hpp). Without atomics the two passes are deterministic.
//
// FuseDq (the single pass, 5 GEMMs per step instead of 7): the dK/dV pass
// also computes each ring tile's dQ = dS K over the block's 128 keys. Both
// consumers store their dS^T transposed into shared memory (two buffers,
// one named barrier per step), each computes one 64-column panel of the
// tile's dQ (head dim 64: the consumers take turns) and stages it in float32
// for a TMA reduction (add) into a float32 accumulator, which dq_accum.cuh
// then scales and converts. The consumers meet at every step; one whose
// rows need none of the tile (see below) skips its S, dP, dV and dK there
// and contributes a zero dS panel.
//
// Each consumer skips the ring tiles outside its own rows' windows (it only
// releases their stages): its 64 rows are half of the block along the axis
// of the block's slowest row bit, so their windows span less of the box
// (2-D 80x80, 16x8 blocks: 121 of 132 tiles; 3-D: 266 of 294).
//
// The issue order per step: S and dP of step j (one wgmma group; two in the
// dQ pass, whose exponentials run under dP), wait, softmax terms in
// registers, masks on the packed operands, then the accumulating MMAs of
// step j as a further group left in flight while step j+1's S and dP are
// issued (where registers allow: not in the dK/dV pass at head dim 128,
// which holds two 64x128 accumulators). The dQ pass's consumers take turns
// at the tensor cores (ping-pong, as in the forward); in the other passes
// their steps interleave without explicit scheduling, which measured the
// same (docs/performance.md, hopper sessions 12 and 23).
#pragma once

#include "pipeline.cuh"
#include "stats.cuh"
#include "wgmma.cuh"

namespace nhood::hopper {

constexpr int kBwdBlockRows = 128;  // block tile: two consumer warpgroups x 64 rows
constexpr int kBwdRingRows = 64;    // tokens per streamed ring tile
constexpr int kBwdThreads = 384;    // producer warpgroup + two consumers
// FuseDq's named barriers (0 is __syncthreads).
constexpr int kBarDsWritten = 1;    // both consumers' dS panels written, both dQ staging tiles free
constexpr int kBarDqStaged = 2;     // + consumer: its dQ tile is in shared memory
// The dQ pass's ping-pong: consumer c's turn at the tensor cores.
constexpr int kBarTurn = 4;         // + consumer

template <int HD, bool KeyMajor, bool FuseDq = false>
struct BwdShape {
  static constexpr int kPanels = HD / 64;  // 128-byte column panels per row
  // FuseDq gives 64 KB of the ring to dS and the dQ staging tiles.
  static constexpr int kStages = FuseDq ? (HD == 128 ? 3 : 6) : (HD == 128 ? 4 : 8);
  static constexpr int kBlockPanel = kBwdBlockRows * 128;
  static constexpr int kRingPanel = kBwdRingRows * 128;
  static constexpr int kBlockBytes = kPanels * kBlockPanel;  // X or Y
  static constexpr int kRingBytes = kPanels * kRingPanel;    // Xr or Yr of one stage
  static constexpr int kStatFloats = KeyMajor ? 2 * kBwdRingRows : 0;  // (lse2, delta) per ring query of one stage
  static constexpr int kRingOff = 2 * kBlockBytes;
  // FuseDq: dS (queries x the block's 128 keys, K-major: one 64-key panel
  // per consumer), two buffers; then one float32 64x64 dQ staging tile per
  // consumer (two 32-column panels, the TMA reduction's box).
  static constexpr int kDsPanel = 64 * 128;
  static constexpr int kDsOff = kRingOff + 2 * kStages * kRingBytes;
  static constexpr int kDqPanel = 64 * 128;
  static constexpr int kDqStageOff = kDsOff + (FuseDq ? 2 * 2 * kDsPanel : 0);
  static constexpr int kStatOff = kDqStageOff + (FuseDq ? 2 * 2 * kDqPanel : 0);
  static constexpr int kBarOff = kStatOff + kStages * kStatFloats * 4;
  static constexpr int kMaskOff = kBarOff + 256;  // MaskTable<kBwdRingRows>
  // +1024: the dynamic shared memory base is aligned up to the swizzle atom.
  static constexpr int kSmemBytes = kMaskOff + MaskTable<kBwdRingRows>::kBytes + 1024;
};

struct BwdArgs {
  // dQ pass: x = q, y = d_out (block, box geo.t), xr = k, yr = v (ring, box geo.u);
  // dK/dV pass: x = k, y = v, xr = q, yr = d_out.
  CUtensorMap x, y, xr, yr;
  CUtensorMap dq_acc;     // FuseDq: the float32 dQ accumulator, ring-tile boxes of 32 columns
  Params p;
  Geo geo;                // t: block tile, u: ring tile
  const float2* stats;    // (lse * log2(e), rowsum(dO * O)) per query, [B, H, tokens] (stats.cuh)
  // dK/dV pass: per axis, the inverse window (group positions [begin, end))
  // of every token index along it (inverse_windows.cu, run before the
  // passes): blocks and rows look them up instead of searching the window
  // rule, whose ~24 inlined searches made the item setup 54 KB of code
  // (docs/performance.md, hopper session 17).
  const int2* inverse[3];
  WorkItems items;  // heads: of the block operand, query heads (dQ) or kv heads (dK/dV)
  int* claim;       // the items' claim counter (pipeline.cuh: for_each_claimed_item), zero at launch; null: static order
};

struct BwdBarriers {
  uint64_t blk_full, blk_empty;
  uint64_t ring_full[8], ring_empty[8];
  ItemMailbox items;
};

// The inverse window of group position pos along axis ax in bt's dilation group.
__device__ __forceinline__ IndexRange inverse_at(const BwdArgs& a, const BlockTile& bt, int ax, int pos) {
  const int2 w = __ldg(a.inverse[ax] + bt.g[ax] + int64_t(a.p.axis[ax].dilation) * pos);
  return {w.x, w.y};
}

// The ring tiles of a block: its (inverse-)neighborhood box, walked once per
// query head of the kv head in the dK/dV pass.
struct BwdWalk {
  KvWalk box;
  int steps;
  __device__ BwdWalk(const BwdArgs& a, const BlockTile& bt, bool key_major) {
    const Params& p = a.p;
    if (key_major) {
      IndexRange first[3], last[3];
#pragma unroll
      for (int ax = 0; ax < 3; ++ax) {
        first[ax] = inverse_at(a, bt, ax, bt.p0[ax]);
        last[ax] = inverse_at(a, bt, ax, bt.pend[ax] - 1);
      }
      box.init_box(a.geo, first, last, 0);
    } else {
      box.init(p, a.geo, bt, kBwdRingRows);
    }
    steps = box.n_spatial * (key_major ? int(a.geo.kv_group.d) : 1);
  }
  // dK/dV pass: the query head of ring step `it` (the box once per query
  // head of kv head h, G query heads per kv head).
  __device__ int ring_head(int h, int G, int it) const { return h * G + it / box.n_spatial; }
};

// Producer thread: the block's X and Y once per item, then Xr and Yr of
// every ring tile.
template <int HD, bool KeyMajor, bool FuseDq>
__device__ void bwd_produce(const BwdArgs& a, unsigned char* smem, BwdBarriers& bars) {
  using S = BwdShape<HD, KeyMajor, FuseDq>;
  const Params& p = a.p;
  const int G = int(a.geo.kv_group.d);
  Ring<S::kStages> ring;
  uint32_t items_done = 0;
  for_each_claimed_item(p, a.geo, a.items, bars.items, a.claim, true, [&](const Item& w, const BlockTile& bt) {
    const BwdWalk wk(a, bt, KeyMajor);
    mbar_wait(&bars.blk_empty, (items_done & 1) ^ 1);
    mbar_arrive_expect_tx(&bars.blk_full, 2 * S::kBlockBytes);
    load_box<S::kPanels>(smem, &a.x, &bars.blk_full, w.h * HD, p, bt, bt.p0, w.b, S::kBlockPanel);
    load_box<S::kPanels>(smem + S::kBlockBytes, &a.y, &bars.blk_full, w.h * HD, p, bt, bt.p0, w.b, S::kBlockPanel);
    TileCursor tiles;
    for (int it = 0; it < wk.steps; ++it) {
      const int head = KeyMajor ? wk.ring_head(w.h, G, it) : w.h / G;
      int j0[3];
      tiles.origin(a.geo, wk.box, j0);
      tiles.advance(wk.box);
      unsigned char* st = smem + S::kRingOff + 2 * ring.stage * S::kRingBytes;
      mbar_wait(&bars.ring_empty[ring.stage], ring.phase ^ 1);
      mbar_arrive_expect_tx(&bars.ring_full[ring.stage], 2 * S::kRingBytes);
      load_box<S::kPanels>(st, &a.xr, &bars.ring_full[ring.stage], head * HD, p, bt, j0, w.b, S::kRingPanel);
      load_box<S::kPanels>(st + S::kRingBytes, &a.yr, &bars.ring_full[ring.stage], head * HD, p, bt, j0, w.b,
                           S::kRingPanel);
      ring.advance();
    }
    ++items_done;
  });
}

// dK/dV pass, one producer warp: (lse scaled to log2, delta) of the 64
// queries of each ring tile into the stage's statistics slots, by cp.async
// with the stage's mbarrier as completion, so the warp never waits for its
// loads. (It used to load, store and then arrive: one load latency per ring
// step, in series, which paced the whole pass: docs/performance.md, hopper
// session 23.) Padding queries get zeros: their Q and dO rows are zero
// (the copy engine fills outside the tensor), so S = dP = 0 there, P = 1,
// dS = 0 and P^T dO = 0: they add nothing.
template <int HD, bool FuseDq>
__device__ void bwd_stage_stats(const BwdArgs& a, unsigned char* smem, BwdBarriers& bars, int lane) {
  using S = BwdShape<HD, true, FuseDq>;
  const Params& p = a.p;
  const int G = int(a.geo.kv_group.d);
  float2* stats = reinterpret_cast<float2*>(smem + S::kStatOff);
  Ring<S::kStages> ring;
  for_each_claimed_item(p, a.geo, a.items, bars.items, a.claim, false, [&](const Item& w, const BlockTile& bt) {
    const BwdWalk wk(a, bt, true);
    TileCursor tiles;
    for (int it = 0; it < wk.steps; ++it) {
      const int head = wk.ring_head(w.h, G, it);
      int j0[3];
      tiles.origin(a.geo, wk.box, j0);
      tiles.advance(wk.box);
      float2* st = stats + ring.stage * kBwdRingRows;
      mbar_wait(&bars.ring_empty[ring.stage], ring.phase ^ 1);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int c = lane + 32 * half;
        int q[3];
        bool ok = true;
#pragma unroll
        for (int ax = 0; ax < 3; ++ax) {
          q[ax] = j0[ax] + ((c >> a.geo.ush[ax]) & (a.geo.u[ax] - 1));
          ok = ok && q[ax] < bt.lg[ax];
        }
        const int64_t row = ok ? (int64_t(w.b) * p.heads + head) * p.tokens() + token_index(p, bt.g, q) : 0;
        fused::cp_async_ca<8>(st + c, a.stats + row, ok);
      }
      mbar_arrive_cp_async(&bars.ring_full[ring.stage]);
      ring.advance();
    }
  });
}

template <class T, int HD, bool KeyMajor, bool FuseDq>
__device__ void bwd_consume(const BwdArgs& a, unsigned char* smem, BwdBarriers& bars, int cw) {
  using S = BwdShape<HD, KeyMajor, FuseDq>;
  using MmaQ = Mma<T, 64>;  // FuseDq: dQ, 64 ring queries x one 64-column panel
  using MmaS = Mma<T, kBwdRingRows>;  // S, dP: 64 block rows x 64 ring tokens
  using MmaA = Mma<T, HD>;            // accumulators: 64 block rows x HD
  constexpr int NS = MmaS::kRegs;
  constexpr int NA = MmaA::kRegs;
  constexpr int KS = kBwdRingRows / 16;  // k-steps of the accumulating MMAs
  // Leave the accumulating MMAs in flight across the next step's S and dP
  // unless two HD-wide accumulators already fill the register file.
  constexpr bool kOverlap = !(KeyMajor && (HD == 128 || FuseDq));
  const Params& p = a.p;
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int row_in_wg = 16 * warp + lane / 4;  // and +8
  const SmemDesc x_desc = smem_desc_sw128(smem_addr(smem) + cw * 64 * 128, 16, 1024);
  const SmemDesc y_desc = smem_desc_sw128(smem_addr(smem) + S::kBlockBytes + cw * 64 * 128, 16, 1024);
  const uint32_t ring_base = smem_addr(smem + S::kRingOff);
  const float* stats = reinterpret_cast<const float*>(smem + S::kStatOff);
  const uint32_t* mask_table = reinterpret_cast<const uint32_t*>(smem + S::kMaskOff);
  const float scale2 = float(p.scale) * fused::kLog2e;  // > 0 (support checks)
  const uint32_t ds_base = smem_addr(smem + S::kDsOff);
  unsigned char* dq_stage = smem + S::kDqStageOff + cw * 2 * S::kDqPanel;
  const int G = int(a.geo.kv_group.d);
  int ds_buf = 0;  // FuseDq: the dS buffer of this step (both consumers take every step together)
  // Ping-pong (dQ pass): the consumers take turns at each MMA issue, so the
  // tensor cores run S, dP of one, S, dP of the other, then dQ of one and
  // of the other, each consumer's softmax terms under the other's MMAs. A
  // consumer that skips a tile still takes (and passes) its turns. Same
  // lease: dQ pass 3-D 54.7 -> 53.9 ms, 1-D 0.112 -> 0.102; in the dK/dV
  // pass the turns measured no change (85.2 -> 85.3), so it goes without.
  constexpr bool kTurns = !FuseDq && !KeyMajor;
  // dQ pass: S and dP as two MMA groups, so the exponentials of P run while
  // dP is still on the tensor cores (3-D dQ pass 53.5 -> 51.8 ms, 1-D 0.098
  // -> 0.096, same lease). In the dK/dV pass and the single pass the split
  // measured 4% slower (their registers: P must stay live until dP lands).
  constexpr bool kSplitSdP = !KeyMajor;
  auto turn_wait = [&] {
    if constexpr (kTurns) named_bar_sync(kBarTurn + cw, 256);
  };
  auto turn_pass = [&] {
    if constexpr (kTurns) named_bar_arrive(kBarTurn + (cw ^ 1), 256);
  };
  if (cw == 1) turn_pass();  // consumer 0 issues first

  Ring<S::kStages> cur, prv;
  uint32_t items_done = 0;
  // A operands of the step in flight: kept live across the loop so the
  // compiler does not reuse their registers while a wgmma still reads them.
  uint32_t pds[KS][4] = {}, pp[KS][4] = {};
  for_each_claimed_item(p, a.geo, a.items, bars.items, a.claim, false, [&](const Item& w, const BlockTile& bt) {
    const BwdWalk wk(a, bt, KeyMajor);

    // This thread's two block rows: validity, position, and the range of
    // ring tokens they interact with per axis (window or inverse window).
    int win[2][6], pos[2][3];
    bool valid[2];
    float lse2[2] = {INFINITY, INFINITY}, delta[2] = {0.f, 0.f};  // dQ pass: per row
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      valid[r] = bt.pos(a.geo, 64 * cw + row_in_wg + 8 * r, pos[r]);
#pragma unroll
      for (int ax = 0; ax < 3; ++ax) {
        IndexRange wr{1, 0};
        if (valid[r])
          wr = KeyMajor ? inverse_at(a, bt, ax, pos[r][ax]) : window_in_group(p.axis[ax], pos[r][ax], bt.lg[ax]);
        win[r][2 * ax] = int(wr.begin);
        win[r][2 * ax + 1] = int(wr.end);
      }
      if (!KeyMajor && valid[r]) {
        const float2 v = a.stats[(int64_t(w.b) * p.heads + w.h) * p.tokens() + token_index(p, bt.g, pos[r])];
        lse2[r] = v.x;
        delta[r] = v.y;
      }
    }

    // The ring positions this consumer's rows interact with, per axis: from
    // the (inverse) windows of its first and last rows (windows are monotone;
    // row 64 cw has every axis's least position of the half, 64 cw + 63 the
    // greatest). `any`: the half holds valid rows (its first row is valid).
    int own_lo[3], own_hi[3], first[3], last[3];
    const bool any = bt.pos(a.geo, 64 * cw, first);
    bt.pos(a.geo, 64 * cw + 63, last);
#pragma unroll
    for (int ax = 0; ax < 3; ++ax) {
      const int l = min(last[ax], bt.pend[ax] - 1);
      const int f = min(first[ax], l);
      const IndexRange wf = KeyMajor ? inverse_at(a, bt, ax, f) : window_in_group(p.axis[ax], f, bt.lg[ax]);
      const IndexRange wl = KeyMajor ? inverse_at(a, bt, ax, l) : window_in_group(p.axis[ax], l, bt.lg[ax]);
      own_lo[ax] = int(wf.begin);
      own_hi[ax] = int(wl.end);
    }

    float acc[NA];                  // dQ, or dK
    float acc_v[KeyMajor ? NA : 1];  // dV
#pragma unroll
    for (int i = 0; i < NA; ++i) acc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < (KeyMajor ? NA : 1); ++i) acc_v[i] = 0.f;

    mbar_wait(&bars.blk_full, items_done & 1);
    TileCursor tiles;
    bool pending = false;  // prv's stage awaits release (its accumulating MMAs may be in flight)
    for (int j = 0; j < wk.steps; ++j) {
      int j0[3];
      tiles.origin(a.geo, wk.box, j0);
      tiles.advance(wk.box);
      bool mine = any;
#pragma unroll
      for (int ax = 0; ax < 3; ++ax) mine = mine && j0[ax] < own_hi[ax] && j0[ax] + a.geo.u[ax] > own_lo[ax];
      // (uniform: the same for the whole warpgroup)
      const bool compute = __all_sync(0xffffffffu, mine);
      // FuseDq: the consumers meet at every step to share dS; one that skips
      // the tile's S, dP, dV and dK contributes a zero dS panel.
      if (!FuseDq && !compute) {
        // Release in ring order: a run of skips longer than the ring must not wait on prv's own release.
        if (pending) {
          wgmma_wait<0>();
          fence_regs<NA>(acc);
          if constexpr (KeyMajor) fence_regs<NA>(acc_v);
          if constexpr (kOverlap) {
            fence_regs<4 * KS>(&pds[0][0]);
            if constexpr (KeyMajor) fence_regs<4 * KS>(&pp[0][0]);
          }
          mbar_arrive(&bars.ring_empty[prv.stage]);
          pending = false;
        }
        mbar_wait(&bars.ring_full[cur.stage], cur.phase);  // the stage holds this tile (not an earlier round's)
        mbar_arrive(&bars.ring_empty[cur.stage]);
        cur.advance();
        turn_wait();
        turn_pass();
        turn_wait();
        turn_pass();
        continue;
      }
      mbar_wait(&bars.ring_full[cur.stage], cur.phase);
      if (compute) {
        const uint32_t xr = ring_base + 2 * cur.stage * S::kRingBytes;  // Xr of this stage, then Yr
        const SmemDesc xr_k = smem_desc_sw128(xr, 16, 1024);                       // K-major (S, dP)
        const SmemDesc xr_mn = smem_desc_sw128(xr, S::kRingPanel, 1024);           // MN-major (accumulation)
        float s[NS], dp[NS];
        turn_wait();
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
          const uint32_t off = (kk / 4) * S::kBlockPanel + (kk % 4) * 32;  // 16 columns = 32 bytes of a 128-byte row
          const uint32_t roff = (kk / 4) * S::kRingPanel + (kk % 4) * 32;
          MmaS::ss(s, x_desc(off), xr_k(roff), kk > 0);
        }
        if constexpr (kSplitSdP) wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
          const uint32_t off = (kk / 4) * S::kBlockPanel + (kk % 4) * 32;
          const uint32_t roff = (kk / 4) * S::kRingPanel + (kk % 4) * 32;
          MmaS::ss(dp, y_desc(off), xr_k(S::kRingBytes + roff), kk > 0);
        }
        wgmma_commit();
        turn_pass();
        // Mask: only tiles not inside every row's range, only the axes along
        // which they stick out; applied to the packed operands (below), so a
        // masked P or dS (whatever its exponential gave) enters no MMA. The
        // dQ pass computes its keep bits here, while S and dP are on the
        // tensor cores (3-D dQ pass 57.3 -> 54.4 ms); the dK/dV pass, short
        // of registers, after its exponentials (here it measured 2.6% slower).
        const unsigned partial = partial_axes(a.geo, wk.box, j0);
        uint32_t keep[2][MaskTable<kBwdRingRows>::kWords];
        if (!KeyMajor && partial) MaskTable<kBwdRingRows>::keep_bits(keep, mask_table, j0, win, partial, lane);
        wgmma_wait<kSplitSdP ? 1 : 0>();  // S (and dP unless split), and the previous step's accumulating MMAs
        fence_regs<NS>(s);
        if constexpr (!kSplitSdP) fence_regs<NS>(dp);
        fence_regs<NA>(acc);
        if constexpr (KeyMajor) fence_regs<NA>(acc_v);
        if constexpr (kOverlap) {
          fence_regs<4 * KS>(&pds[0][0]);
          if constexpr (KeyMajor) fence_regs<4 * KS>(&pp[0][0]);
          if (pending) mbar_arrive(&bars.ring_empty[prv.stage]);
        }

        // P and dS (unscaled: the scale is applied to dQ/dK at the store),
        // masked once packed (below).
        // (Issuing dV += P^T dO before computing dS would overlap the two but
        // needs P, dP and the packed P live at once: ptxas then serializes the
        // MMAs for lack of registers at head dim 128.)
        if constexpr (KeyMajor) {
          const float* st = stats + cur.stage * S::kStatFloats;
#pragma unroll
          for (int n = 0; n < kBwdRingRows / 8; ++n) {
            // (lse2, delta) of this thread's columns 8n + 2(lane % 4) and the
            // next (ld.shared: through a plain pointer ptxas emitted a generic LD.E)
            const float4 ld = lds128f(st + 2 * (8 * n + 2 * (lane & 3)));
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int i = 4 * n + 2 * r;
              s[i] = fast_exp2(fmaf(s[i], scale2, -ld.x));
              s[i + 1] = fast_exp2(fmaf(s[i + 1], scale2, -ld.z));
              dp[i] = s[i] * (dp[i] - ld.y);
              dp[i + 1] = s[i + 1] * (dp[i + 1] - ld.w);
            }
          }
          pack_a<T, kBwdRingRows>(pp, s);
        } else {
          // f(i, r) for each of this thread's values i, of its block row r.
          auto each_value = [](auto&& f) {
#pragma unroll
            for (int n = 0; n < kBwdRingRows / 8; ++n)
#pragma unroll
              for (int r = 0; r < 2; ++r)
#pragma unroll
                for (int e = 0; e < 2; ++e) f(4 * n + 2 * r + e, r);
          };
          each_value([&](int i, int r) { s[i] = fast_exp2(fmaf(s[i], scale2, -lse2[r])); });
          wgmma_wait<0>();  // dP
          fence_regs<NS>(dp);
          each_value([&](int i, int r) { dp[i] = s[i] * (dp[i] - delta[r]); });
        }
        pack_a<T, kBwdRingRows>(pds, dp);
        if (partial) {
          if constexpr (KeyMajor) MaskTable<kBwdRingRows>::keep_bits(keep, mask_table, j0, win, partial, lane);
          MaskTable<kBwdRingRows>::apply_packed(pds, keep);
          if constexpr (KeyMajor) MaskTable<kBwdRingRows>::apply_packed(pp, keep);
        }

        // Accumulate: B is the ring tile read transposed (MN-major): 16 ring
        // rows per k-step (two 8-row atoms), 64-column panels apart.
        turn_wait();
        wgmma_fence();
        if constexpr (KeyMajor) {
#pragma unroll
          for (int kk = 0; kk < KS; ++kk)
            MmaA::rs(acc_v, pp[kk], xr_mn(S::kRingBytes + kk * 16 * 128));  // dV += P^T dO
        }
#pragma unroll
        for (int kk = 0; kk < KS; ++kk)
          MmaA::rs(acc, pds[kk], xr_mn(kk * 16 * 128));  // dQ += dS K, dK += dS^T Q
        wgmma_commit();
        turn_pass();
      } else {
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) pds[kk][0] = pds[kk][1] = pds[kk][2] = pds[kk][3] = 0u;
      }
      // FuseDq: this ring tile's dQ = dS K over the block's 128 keys, one
      // 64-column panel per consumer (head dim 128; at 64 the consumers take
      // turns), summed into the float32 accumulator by a TMA reduction.
      float dq[FuseDq ? MmaQ::kRegs : 1];
      bool dq_mine = false;
      int dq_panel = 0;
      if constexpr (FuseDq) {
        // dS^T (this consumer's keys x the ring queries) into its panel of
        // dS, transposed: the dQ MMA's A operand, K-major over keys.
        const uint32_t ds = ds_base + ds_buf * 2 * S::kDsPanel;
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) {
          const int m = lane >> 3, q = 16 * kk + 8 * (m >> 1) + (lane & 7), chunk = 2 * warp + (m & 1);
          stsm4t(ds + cw * S::kDsPanel + sw128_offset(q, chunk), pds[kk]);
        }
        fence_proxy_async();
        if (t == 0) bulk_wait_read();  // this consumer's staging tile has been read by its last reduction
        named_bar_sync(kBarDsWritten, 256);
        dq_panel = HD == 128 ? (cw + ds_buf) & 1 : 0;
        dq_mine = HD == 128 || __all_sync(0xffffffffu, ds_buf == cw);
        if (dq_mine) {
          const SmemDesc ds_k = smem_desc_sw128(ds, 16, 1024);
          const SmemDesc blk_mn = smem_desc_sw128(smem_addr(smem) + dq_panel * S::kBlockPanel, S::kBlockPanel, 1024);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < kBwdBlockRows / 16; ++kk)
            MmaQ::template ss<true>(dq, ds_k((kk / 4) * S::kDsPanel + (kk % 4) * 32), blk_mn(kk * 16 * 128), kk > 0);
          wgmma_commit();
        }
        ds_buf ^= 1;
      }
      if constexpr (!kOverlap) {
        wgmma_wait<0>();
        fence_regs<NA>(acc);
        fence_regs<NA>(acc_v);
        fence_regs<4 * KS>(&pds[0][0]);
        fence_regs<4 * KS>(&pp[0][0]);
        if constexpr (FuseDq)
          if (dq_mine) fence_regs<MmaQ::kRegs>(dq);
        mbar_arrive(&bars.ring_empty[cur.stage]);
      }
      if constexpr (FuseDq) {
        if (dq_mine) {
          // Stage (swizzled like the reduction's 128-byte box rows), then one thread reduces it into dQ.
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = 16 * warp + (lane >> 2) + 8 * h, chunk = 2 * (i % 4) + ((lane & 3) >> 1);
              sts64f(dq_stage + (i / 4) * S::kDqPanel + sw128_offset(row, chunk) + 8 * (lane & 1),
                     dq[4 * i + 2 * h], dq[4 * i + 2 * h + 1]);
            }
          fence_proxy_async();
          named_bar_sync(kBarDqStaged + cw, 128);
          if (t == 0) {
            const int head = wk.ring_head(w.h, G, j);
#pragma unroll
            for (int c = 0; c < 2; ++c)
              tma_reduce_add_5d(&a.dq_acc, dq_stage + c * S::kDqPanel, head * HD + 64 * dq_panel + 32 * c,
                                coord(p, bt, 2, j0[2]), coord(p, bt, 1, j0[1]), coord(p, bt, 0, j0[0]), w.b);
            bulk_commit();
          }
        }
      }
      pending = kOverlap;
      prv = cur;
      cur.advance();
    }
    wgmma_wait<0>();
    fence_regs<NA>(acc);
    if constexpr (KeyMajor) fence_regs<NA>(acc_v);
    if (pending) mbar_arrive(&bars.ring_empty[prv.stage]);
    mbar_arrive(&bars.blk_empty);

    // Epilogue: this thread's valid rows of dQ, or of dK and dV.
    const float sc[2] = {float(p.scale), float(p.scale)};
    const detail::Operand& og = KeyMajor ? p.dk : p.dq;
    store_rows<T, HD>(acc, sc, lane, [&](int r) -> T* {
      return valid[r] ? static_cast<T*>(og.data) + w.b * og.sb + w.h * og.sh + fused::tok_off(og, p, bt.g, pos[r])
                      : nullptr;
    });
    if constexpr (KeyMajor) {
      const float one[2] = {1.f, 1.f};
      store_rows<T, HD>(acc_v, one, lane, [&](int r) -> T* {
        return valid[r] ? static_cast<T*>(p.dv.data) + w.b * p.dv.sb + w.h * p.dv.sh + fused::tok_off(p.dv, p, bt.g, pos[r])
                        : nullptr;
      });
    }
    ++items_done;
  });
  if (cw == 0) turn_wait();  // consumes consumer 1's last hand-over, so no arrival is left pending
  if (FuseDq && t == 0) bulk_wait();  // the last reductions are done before the CTA's shared memory goes
}

template <class T, int HD, bool KeyMajor, bool FuseDq = false>
__global__ void __launch_bounds__(kBwdThreads, 1) backward_kernel(const __grid_constant__ BwdArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = BwdShape<HD, KeyMajor, FuseDq>;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  BwdBarriers& bars = *reinterpret_cast<BwdBarriers*>(smem + S::kBarOff);
  static_assert(sizeof(BwdBarriers) <= 256 && S::kStages <= 8);
  static_assert(S::kSmemBytes <= 227 * 1024);
  MaskTable<kBwdRingRows>::build(reinterpret_cast<uint32_t*>(smem + S::kMaskOff), a.geo);

  // Role from lane 0 so the compiler sees it warp-uniform (ptxas serializes
  // wgmma in paths it considers divergent).
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  const int warp_in_wg = __shfl_sync(0xffffffffu, int(threadIdx.x / 32) % 4, 0);
  if (threadIdx.x == 0) {
    mbar_init(&bars.blk_full, 1);
    mbar_init(&bars.blk_empty, 256);
    for (int s = 0; s < S::kStages; ++s) {
      mbar_init(&bars.ring_full[s], KeyMajor ? 1 + 32 : 1);  // TMA thread (+ statistics warp)
      mbar_init(&bars.ring_empty[s], 256);
    }
    for (int s = 0; s < 2; ++s) {
      mbar_init(&bars.items.full[s], 1);
      mbar_init(&bars.items.empty[s], 8 + (KeyMajor ? 1 : 0));  // consumer warps (+ the statistics warp)
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    regs_dealloc<24>();  // frees registers for the consumers; the producer warps spill instead (off the MMA path)
    if (threadIdx.x == 0) {
      tma_prefetch_map(&a.x);
      tma_prefetch_map(&a.y);
      tma_prefetch_map(&a.xr);
      tma_prefetch_map(&a.yr);
      if (FuseDq) tma_prefetch_map(&a.dq_acc);
      bwd_produce<HD, KeyMajor, FuseDq>(a, smem, bars);
    } else if (KeyMajor && warp_in_wg == 1) {
      bwd_stage_stats<HD, FuseDq>(a, smem, bars, threadIdx.x % 32);
    }
  } else {
    regs_alloc<240>();  // 128 x 24 + 256 x 240 = 64512: the dK/dV pass at head dim 128 needs them (fewer spills per step)
    bwd_consume<T, HD, KeyMajor, FuseDq>(a, smem, bars, wg - 1);
  }
#endif
}

}  // namespace nhood::hopper
