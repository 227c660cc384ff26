// hopper backend, forward: warp-specialized, persistent, TMA + wgmma.
//
// A CTA runs three warpgroups. Warpgroup 0 is the producer: one thread
// issues TMA box loads of the query tile and of every KV inner tile of its
// neighborhood box into a ring of shared-memory stages, signalling mbarriers,
// and writes each stage's tile header (origin, mask axes: pipeline.cuh).
// Warpgroups 1 and 2 are consumers, each owning 64 of the tile's 128 query
// rows: S = Q K^T (wgmma, Q from registers, K from shared memory), mask only on KV
// tiles not inside every row's window, online softmax in registers, then
// O += P V (wgmma, P from registers, V transposed from shared memory). The
// two consumers take turns at the tensor cores (named barriers, ping-pong):
// while one runs its softmax the other's MMAs keep the tensor cores busy; a
// turn issues S_j and O += P_{j-1} V_{j-1} as two MMA groups, and the softmax
// of S_j starts as soon as the first completes (docs/performance.md, hopper).
// Each consumer stages its normalized rows of O in the tile's last V stage
// and one thread stores them with TMA (element pairs where no tensor map
// can describe `out`). CTAs loop over (query tile, head, batch) work items
// (persistent grid).
//
// Geometry (block tile t, inner tile u, KV walk, window rule) is shared with
// the fused backend (cuda/fused/fused.cuh); only the data movement and the
// MMAs differ.
#pragma once

#include "pipeline.cuh"
#include "wgmma.cuh"

namespace nhood::hopper {

constexpr int kConsumers = 2;          // consumer warpgroups, 64 query rows each
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kTileRows = 64 * kConsumers;  // queries per block tile
constexpr int kTileKeys = 128;              // keys per KV inner tile

template <int HD>
struct FwdShape {
  static constexpr int kPanels = HD / 64;                // 128-byte column panels per row
  // KV ring depth: as deep as shared memory allows (227 KB per block); the
  // loads of the next tiles come from L2 with microseconds of latency.
  static constexpr int kStages = HD == 128 ? 3 : 5;
  static constexpr int kQPanel = kTileRows * 128;        // bytes of one Q panel
  static constexpr int kKVPanel = kTileKeys * 128;       // bytes of one K or V panel
  static constexpr int kQBytes = kPanels * kQPanel;
  static constexpr int kKVBytes = kPanels * kKVPanel;    // one K (or V) stage
  static constexpr int kBarrierBytes = 256;
  static constexpr int kBarOff = kQBytes + 2 * kStages * kKVBytes;
  static constexpr int kMaskOff = kBarOff + kBarrierBytes;  // MaskTable<kTileKeys>
  static constexpr int kHeadOff = kMaskOff + MaskTable<kTileKeys>::kBytes;  // one tile header (int4) per stage
  // +1024: the dynamic shared memory base is aligned up to the swizzle atom.
  static constexpr int kSmemBytes = kHeadOff + 16 * kStages + 1024;
};

// Everything a launch needs, passed by value (__grid_constant__: tensor maps
// must live in parameter, constant or global memory).
struct FwdArgs {
  CUtensorMap q, k, v, add_k, add_v;
  // The output, if TMA can write it: boxes of half a block tile (one
  // consumer's 64 rows, split along the slowest axis `half_axis` of the tile).
  CUtensorMap out;
  Params p;
  Geo geo;
  WorkItems items;
  int half_axis;
  bool tma_out;
  bool pingpong;  // consumers take turns at the tensor cores (NHOOD_HOPPER_PINGPONG=0 turns it off)
};

struct Barriers {
  uint64_t q_full, q_empty;
  // K and V have separate barriers: K_j is free after S_j, V_j only after
  // O += P_j V_j one step later, so the producer can refill K sooner.
  uint64_t k_full[5], v_full[5], k_empty[5], v_empty[5];
};

template <class T, int HD>
__device__ void produce(const FwdArgs& a, unsigned char* smem, Barriers& bars) {
  using S = FwdShape<HD>;
  const Params& p = a.p;
  Ring<S::kStages> ring;
  uint32_t tiles_done = 0;
  for_each_item(p, a.geo, a.items, [&](const Item& w, const BlockTile& bt) {
    mbar_wait(&bars.q_empty, (tiles_done & 1) ^ 1);
    mbar_arrive_expect_tx(&bars.q_full, S::kQBytes);
    load_box<S::kPanels>(smem, &a.q, &bars.q_full, w.h * HD, p, bt, bt.p0, w.b, S::kQPanel);
    const int hk = a.geo.kv_group.div(w.h);
    // K (kv = 0) or V (kv = 1) of a spatial tile at j0, or of the additional tokens from a0.
    auto load_tile = [&](int kv, int stage, bool spatial, const int* j0, int a0) {
      unsigned char* dst = smem + S::kQBytes + (kv * S::kStages + stage) * S::kKVBytes;
      uint64_t* bar = kv ? &bars.v_full[stage] : &bars.k_full[stage];
      if (spatial)
        load_box<S::kPanels>(dst, kv ? &a.v : &a.k, bar, hk * HD, p, bt, j0, w.b, S::kKVPanel);
      else
        for (int c = 0; c < S::kPanels; ++c)
          tma_load_3d(dst + c * S::kKVPanel, kv ? &a.add_v : &a.add_k, bar, hk * HD + 64 * c, a0, w.b);
    };
    // The first tile's K goes out before the walk's setup, which delayed the
    // first S by ~1 us on the 1-D anchor (timeline, docs/performance.md). Its
    // barrier gets the byte count now and the producer's arrival once the
    // header is written.
    int j0[3];
    TileCursor tiles;
    tiles.start(p, a.geo, bt, j0);
    mbar_wait(&bars.k_empty[ring.stage], ring.phase ^ 1);
    mbar_expect_tx(&bars.k_full[ring.stage], S::kKVBytes);
    load_tile(0, ring.stage, true, j0, 0);
    KvWalk kw;
    kw.init(p, a.geo, bt, kTileKeys);

    for (int it = 0; it < kw.n_total; ++it) {
      const int stage = ring.stage;
      const bool spatial = it < kw.n_spatial;
      const int a0 = (it - kw.n_spatial) * kTileKeys;  // additional tiles: the first token
      void* header = smem + S::kHeadOff + 16 * stage;
      if (spatial) {
        tiles.origin(a.geo, kw, j0);
        tiles.advance(kw);
      }
      if (it > 0) {
        mbar_wait(&bars.k_empty[stage], ring.phase ^ 1);
        mbar_expect_tx(&bars.k_full[stage], S::kKVBytes);
        load_tile(0, stage, spatial, j0, a0);
      }
      if (spatial)
        TileHeader::put_spatial(header, a.geo, kw, j0);
      else
        TileHeader::put_additional(header, kw, a0);
      mbar_arrive(&bars.k_full[stage]);  // releases the header
      mbar_wait(&bars.v_empty[stage], ring.phase ^ 1);
      mbar_arrive_expect_tx(&bars.v_full[stage], S::kKVBytes);
      load_tile(1, stage, spatial, j0, a0);
      ring.advance();
    }
    ++tiles_done;
  });
}

// Named barrier ids: 0 is __syncthreads, 1 and 2 the consumers' turns.
constexpr int kBarStageFree = 3;  // both consumers finished their work item's MMAs
constexpr int kBarStaged = 4;     // + consumer: its rows of O are in shared memory
constexpr int kBarSetUp = 6;      // the mbarriers and the mask table are initialized

// Named barriers ordering the two consumers' MMA issue (ping-pong): a
// consumer waits for its turn, issues its MMAs, then hands the turn over, so
// one consumer's softmax runs while the other's MMAs occupy the tensor cores.
__device__ __forceinline__ void turn_wait(int consumer) {
  asm volatile("bar.sync %0, 256;" ::"r"(1 + consumer) : "memory");
}
__device__ __forceinline__ void turn_pass(int consumer) {
  asm volatile("bar.arrive %0, 256;" ::"r"(1 + (consumer ^ 1)) : "memory");
}

template <class T, int HD>
__device__ void consume(const FwdArgs& a, unsigned char* smem, Barriers& bars, int cw) {
  using S = FwdShape<HD>;
  using MmaS = Mma<T, kTileKeys>;
  using MmaO = Mma<T, HD>;
  constexpr int NS = MmaS::kRegs;  // S accumulators per thread (64)
  constexpr int NO = MmaO::kRegs;  // O accumulators per thread
  const Params& p = a.p;
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int row_in_wg = 16 * warp + lane / 4;  // and +8
  const uint32_t kv_base = smem_addr(smem + S::kQBytes);
  const float scale2 = float(p.scale) * fused::kLog2e;  // > 0 (forward_unsupported)
  const uint32_t* mask_table = reinterpret_cast<const uint32_t*>(smem + S::kMaskOff);

  Ring<S::kStages> cur, prv;  // stage of this step's K, and of the previous step's V
  uint32_t tiles_done = 0;
  // Thread 0's TMA store of the last item's rows may still read this V
  // stage: it waits for the read, and releases the stage, only once the
  // next item's first S is issued (the wait held its warp, and with it the
  // consumer's next MMAs, ~0.3 us per item on the 1-D anchor).
  int store_reads = -1;
  auto release_staged = [&]() {
    if (store_reads >= 0) {
      bulk_wait_read();
      mbar_arrive(&bars.v_empty[store_reads]);
      store_reads = -1;
    }
  };
  if (a.pingpong && cw == 1) turn_pass(cw);  // consumer 0 issues first
  for_each_item(p, a.geo, a.items, [&](const Item& w, const BlockTile& bt) {
    // This thread's two rows: their validity and per-axis windows.
    int win[2][6];
    bool valid[2];
    int qpos[2][3];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      valid[r] = bt.pos(a.geo, 64 * cw + row_in_wg + 8 * r, qpos[r]);
#pragma unroll
      for (int ax = 0; ax < 3; ++ax) {
        const IndexRange wr = window_in_group(p.axis[ax], qpos[r][ax], bt.lg[ax]);
        win[r][2 * ax] = valid[r] ? int(wr.begin) : 1;
        win[r][2 * ax + 1] = valid[r] ? int(wr.end) : 0;
      }
    }

    float o[NO];
#pragma unroll
    for (int i = 0; i < NO; ++i) o[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    uint32_t pa[kTileKeys / 16][4];  // P of the previous step, as the A operand of O += P V

    // Q as the register A operand of S = Q K^T: loaded once per tile (this
    // warp's 16 rows, ldmatrix from the 128-byte-swizzled panels), so the S
    // MMAs read only K from shared memory and the Q stage is free for the
    // next tile's load at once (it used to wait for the tile's last S).
    uint32_t qa[HD / 16][4];
    mbar_wait(&bars.q_full, tiles_done & 1);
    {
      const int row = 64 * cw + 16 * warp + (lane & 15);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const int chunk = 2 * (kk % 4) + (lane >> 4);  // 16-byte chunk of the 128-byte row, before the swizzle
        fused::ldsm4(qa[kk], smem + (kk / 4) * S::kQPanel + sw128_offset(row, chunk));
      }
    }
    mbar_arrive(&bars.q_empty);
    // Step j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} together, then
    // turns S_j into P_j: each turn at the tensor cores is 2 x HD/16 MMAs.
    // The first and last steps are peeled so no MMA sits under a branch
    // (ptxas serializes wgmma in paths it cannot prove uniform).
    auto issue_qk = [&](float* s) {
      const SmemDesc k = smem_desc_sw128(kv_base + cur.stage * S::kKVBytes, 16, 1024);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const uint32_t off = (kk % 4) * 32;  // 16 columns = 32 bytes into the 128-byte row
        MmaS::template rs<false>(s, qa[kk], k((kk / 4) * S::kKVPanel + off), kk > 0);
      }
    };
    auto issue_pv = [&]() {
      const SmemDesc v = smem_desc_sw128(kv_base + (S::kStages + prv.stage) * S::kKVBytes, S::kKVPanel, 1024);
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk)  // 16 keys = two 8-row atoms (sbo); 64-wide panels (lbo)
        MmaO::rs(o, pa[kk], v(kk * 16 * 128));
    };
    auto begin_turn = [&]() {
      if (a.pingpong) turn_wait(cw);
      fence_regs<NO>(o);
      fence_regs<kTileKeys / 4>(&pa[0][0]);
      wgmma_fence();
    };
    auto end_turn = [&]() {
      wgmma_commit();
      if (a.pingpong) turn_pass(cw);
    };
    float alpha[2];
    // S_j -> exp2 of the scaled logits (in place) with the row max/sum
    // updated: runs while this consumer's own O += P V MMAs are in flight,
    // so it touches neither o nor pa.
    // hd: the step's tile header (read before its K stage is released).
    auto exps = [&](float* s, const TileHeader& hd) {
      // Mask: only KV tiles not inside every row's window, only the axes along which they stick out.
      if (!hd.additional) {
        if (hd.partial) MaskTable<kTileKeys>::apply(s, mask_table, hd.j0, win, hd.partial, lane);
      } else {
        const int left = int(p.n_additional) - hd.j0[0];
        if (left < kTileKeys)
#pragma unroll
          for (int n = 0; n < kTileKeys / 8; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (8 * n + 2 * (lane & 3) + e >= left) s[4 * n + e] = s[4 * n + 2 + e] = -INFINITY;
      }
      // Online softmax in the log2 domain (m in scaled units; the scale is
      // folded into the exponent's FMA). Each row lives in a quad of lanes.
      // Max and sum are reduced as trees: a 32-long dependent chain per row
      // was on the critical path between two turns at the tensor cores.
      // The running max moves only when some row of the warp exceeds it by
      // more than fused::kRescaleSlack, so most steps skip the O rescale in
      // finish().
      float mx[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float t[kTileKeys / 8];
#pragma unroll
        for (int n = 0; n < kTileKeys / 8; ++n) t[n] = fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]);
        mx[r] = tree_reduce<kTileKeys / 8>(t, [](float x, float y) { return fmaxf(x, y); });
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2)) * scale2;
      }
      constexpr float kSlack = fused::kRescaleSlack;
      const bool grow = __any_sync(0xffffffffu, mx[0] > m[0] + kSlack || mx[1] > m[1] + kSlack);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float t[kTileKeys / 8];
        const float mnew = grow ? fmaxf(m[r], mx[r]) : m[r];
        const float base = mnew == -INFINITY ? 0.f : mnew;
        alpha[r] = fast_exp2(m[r] - base);
        m[r] = mnew;
#pragma unroll
        for (int n = 0; n < kTileKeys / 8; ++n) {
          s[4 * n + 2 * r] = fast_exp2(fmaf(s[4 * n + 2 * r], scale2, -base));
          s[4 * n + 2 * r + 1] = fast_exp2(fmaf(s[4 * n + 2 * r + 1], scale2, -base));
          t[n] = s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
        }
        l[r] = l[r] * alpha[r] + tree_reduce<kTileKeys / 8>(t, [](float x, float y) { return x + y; });
      }
    };
    // After this consumer's O += P_{j-1} V_{j-1} completed: rescale O (skipped
    // when no row max moved in the warp) and pack P_j as the next A operand.
    auto finish = [&](const float* s) {
      if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int n = 0; n < HD / 8; ++n) {
          o[4 * n] *= alpha[0];
          o[4 * n + 1] *= alpha[0];
          o[4 * n + 2] *= alpha[1];
          o[4 * n + 3] *= alpha[1];
        }
      }
      pack_a<T, kTileKeys>(pa, s);
      prv = cur;
      cur.advance();
    };

    int n_total;  // KV tiles of this item (the first header says)
    {
      float s[NS];
      mbar_wait(&bars.k_full[cur.stage], cur.phase);
      const TileHeader hd = TileHeader::get(smem + S::kHeadOff + 16 * cur.stage);
      n_total = hd.n_total;
      begin_turn();
      issue_qk(s);
      end_turn();
      release_staged();
      wgmma_wait<0>();
      fence_regs<NS>(s);
      mbar_arrive(&bars.k_empty[cur.stage]);
      exps(s, hd);
      finish(s);
    }
    for (int j = 1; j < n_total; ++j) {
      float s[NS];
      mbar_wait(&bars.k_full[cur.stage], cur.phase);
      const TileHeader hd = TileHeader::get(smem + S::kHeadOff + 16 * cur.stage);
      mbar_wait(&bars.v_full[prv.stage], prv.phase);
      begin_turn();
      issue_qk(s);
      wgmma_commit();  // group 1: S_j
      issue_pv();      // group 2: O += P_{j-1} V_{j-1}
      end_turn();
      wgmma_wait<1>();  // S_j ready; the PV group may still run
      fence_regs<NS>(s);
      mbar_arrive(&bars.k_empty[cur.stage]);
      exps(s, hd);
      wgmma_wait<0>();
      fence_regs<NO>(o);
      fence_regs<kTileKeys / 4>(&pa[0][0]);
      mbar_arrive(&bars.v_empty[prv.stage]);
      finish(s);
    }
    mbar_wait(&bars.v_full[prv.stage], prv.phase);
    begin_turn();
    issue_pv();
    end_turn();
    wgmma_wait<0>();
    fence_regs<NO>(o);

    // Epilogue: normalize and store this thread's valid rows.
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float li = l[r];
      li += __shfl_xor_sync(0xffffffffu, li, 1);
      li += __shfl_xor_sync(0xffffffffu, li, 2);
      inv[r] = li > 0.f ? 1.f / li : 0.f;
      if (valid[r] && p.lse.data && (lane & 3) == 0) {
        float* gl = static_cast<float*>(p.lse.data) + w.b * p.lse.sb + w.h * p.lse.sh +
                    fused::tok_off(p.lse, p, bt.g, qpos[r]);
        *gl = (m[r] + log2f(li)) * 0.69314718055994531f;
      }
    }
    unsigned char* sv_last = smem + S::kQBytes + (S::kStages + prv.stage) * S::kKVBytes;
    if (a.tma_out) {
      // Through shared memory and one TMA store per panel, not per-thread
      // 4-byte stores (8 rows x 16 bytes per warp instruction): the last
      // step and the epilogue took 2.1 -> 1.7 us per work item (timeline of
      // the 1-D anchor, docs/performance.md, hopper session 20). The last V
      // stage is the staging buffer (an O tile has the bytes of a V tile);
      // it is free once both consumers' last O += P V completed.
      named_bar_sync(kBarStageFree, 256);
      stage_rows<T, HD>(sv_last, o, inv, 64 * cw + 16 * warp, lane, S::kKVPanel);
      fence_proxy_async();
      named_bar_sync(kBarStaged + cw, 128);
      if (t == 0) {
        int pos0[3];
#pragma unroll
        for (int ax = 0; ax < 3; ++ax) pos0[ax] = bt.p0[ax] + (ax == a.half_axis ? cw * (a.geo.t[ax] / 2) : 0);
        store_box<S::kPanels>(sv_last + 64 * cw * 128, &a.out, w.h * HD, p, bt, pos0, w.b, S::kKVPanel);
        bulk_commit();
        store_reads = prv.stage;
      } else {
        mbar_arrive(&bars.v_empty[prv.stage]);
      }
    } else {
      mbar_arrive(&bars.v_empty[prv.stage]);
      store_rows<T, HD>(o, inv, lane, [&](int r) -> T* {
        return valid[r] ? static_cast<T*>(p.out.data) + w.b * p.out.sb + w.h * p.out.sh +
                              fused::tok_off(p.out, p, bt.g, qpos[r])
                        : nullptr;
      });
    }
    ++tiles_done;
  });
  if (a.pingpong && cw == 0) turn_wait(cw);  // consumes consumer 1's last hand-over, so no arrival is left pending
  release_staged();  // shared memory must outlive the last store's reads
}

template <class T, int HD>
__global__ void __launch_bounds__(kThreads, 1) forward_kernel(const __grid_constant__ FwdArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = FwdShape<HD>;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  Barriers& bars = *reinterpret_cast<Barriers*>(smem + S::kBarOff);
  static_assert(sizeof(Barriers) <= S::kBarrierBytes);
  static_assert(S::kStages <= 5, "Barriers holds 5 stages");
  static_assert(S::kSmemBytes <= 227 * 1024);
  // Broadcast from lane 0 so the compiler sees a warp-uniform role: wgmma in
  // a path it considers divergent gets serialized (ptxas C7520).
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  if (threadIdx.x == 0) {
    // The descriptors' fetch overlaps the set-up (the first loads wait for it).
    tma_prefetch_map(&a.q);
    tma_prefetch_map(&a.k);
    tma_prefetch_map(&a.v);
    mbar_init(&bars.q_full, 1);
    mbar_init(&bars.q_empty, 128 * kConsumers);
    for (int s = 0; s < S::kStages; ++s) {
      mbar_init(&bars.k_full[s], 1);
      mbar_init(&bars.v_full[s], 1);
      mbar_init(&bars.k_empty[s], 128 * kConsumers);
      mbar_init(&bars.v_empty[s], 128 * kConsumers);
    }
    mbar_init_fence();
  }
  // The producer's thread issues its first loads at once; the consumers
  // wait for the barriers' initialization and build the mask table.
  if (wg == 0) {
    if (threadIdx.x < 32) named_bar_arrive(kBarSetUp, 128 * kConsumers + 32);
    regs_dealloc<24>();  // the producer thread fits (no spills since the window rule runs in 32 bits)
    if (threadIdx.x == 0) produce<T, HD>(a, smem, bars);
  } else {
    MaskTable<kTileKeys>::build(reinterpret_cast<uint32_t*>(smem + S::kMaskOff), a.geo, threadIdx.x - 128,
                                128 * kConsumers);
    named_bar_sync(kBarSetUp, 128 * kConsumers + 32);
    regs_alloc<240>();  // 128 x 24 + 256 x 240 = 64512: Q in registers needs them (232 spills)
    consume<T, HD>(a, smem, bars, wg - 1);
  }
#endif
}

}  // namespace nhood::hopper
