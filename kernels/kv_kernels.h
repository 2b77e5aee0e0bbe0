// Launch interface of the KV-cache CUDA kernels: plain pointers, sizes and a stream (no LibTorch).
// The page layout is core/kv/format.h's PageLayout; kv_ops.h is the LibTorch-facing side.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace streamrecon::kernels {

// Storage of a layer's cache as the attention kernel reads it.
enum class KvFormat : int {
  kBf16 = 0,   // dense bf16 [H, T, D] (token stride D, head stride T_cap * D)
  kPaged4 = 1, // pages with 4-bit codes
  kPaged2 = 2, // pages with 2-bit codes
};

// Pages of one layer (device pointers, PageLayout order): see core/kv/format.h.
struct PagesView {
  const uint8_t* k_codes = nullptr;   // [P, H, G, D*b/8]
  const uint32_t* k_params = nullptr; // [P, H, D] of (scale, zero) fp16 pairs
  const uint8_t* v_codes = nullptr;   // [P, H, G, D*b/8]
  const uint32_t* v_params = nullptr; // [P, H, G, D/Gv] of (scale, zero)
  const float* norms = nullptr;       // [P, G] or nullptr (KIVI)
  const int32_t* meta = nullptr;      // [P, 2]: valid, frame
  int pages = 0;
  int slots = 0;   // G
  int v_group = 0; // Gv
};

struct AppendParams {
  const uint16_t* k = nullptr;  // bf16 [H, N, D] keys after RoPE (not rotated)
  const uint16_t* v = nullptr;  // bf16 [H, N, D]
  int heads = 0, tokens = 0, head_dim = 0;
  int bits = 4;
  bool oscar = false;           // rotate keys by the Hadamard matrix and divide by token norms
  bool v_hadamard = false;      // rotate values too
  int frame = 0;
  const int32_t* frame_counter = nullptr;  // when set, the frame number is *frame_counter (a device counter)
  // Output: pages [first_page, first_page + ceil(N / G)) of these arrays.
  uint8_t* k_codes = nullptr;
  uint32_t* k_params = nullptr;
  uint8_t* v_codes = nullptr;
  uint32_t* v_params = nullptr;
  float* norms = nullptr;
  int32_t* meta = nullptr;
  int first_page = 0;
  int slots = 32;
  int v_group = 64;
  // 1: a block per page, a warp per head; 2 (the default in kv_ops): blocks of heads, a lane per
  // token, pages staged by cp.async, OScaR's token norms through a thread-block cluster over the
  // heads (sm_90+; without clusters OScaR falls back to 1). See kv_append.cu.
  int variant = 1;
  int heads_per_block = 0;  // variant 2: 1, 2 or 4 (dividing heads); 0 = automatic
};

// Quantizes and packs N tokens into ceil(N / G) pages (one block per page).
cudaError_t LaunchAppendPages(const AppendParams& p, cudaStream_t stream);

struct AttentionParams {
  // q, k_cur and v_cur are bf16 for the dense format and fp16 for packed pages (the kernel then
  // multiplies in fp16, where dequantization needs no conversions).
  const uint16_t* q = nullptr;  // [H, Nq, D] (rotated for OScaR)
  int heads = 0, queries = 0;
  int64_t q_head_stride = 0;    // elements from one head's queries to the next (0: Nq * D)
  // Packed pages: q and the current frame given in bf16 instead, converted to fp16 as the kernel
  // loads them (held at fp16's largest finite value; NaN stays NaN), with no cast of their own.
  bool bf16_inputs = false;
  float scale = 0.125f;         // 1 / sqrt(D)
  // The cache: dense bf16 or pages.
  KvFormat format = KvFormat::kBf16;
  const uint16_t* k_dense = nullptr;  // bf16 [H, *, D] with head stride dense_head_stride (elements)
  const uint16_t* v_dense = nullptr;
  int64_t dense_head_stride = 0;
  int dense_tokens = 0;
  PagesView pages;
  // The current frame, bf16 [H, Nc, D] (keys rotated for OScaR).
  const uint16_t* k_cur = nullptr;
  const uint16_t* v_cur = nullptr;
  int cur_tokens = 0;
  // Output bf16 [H, Nq, D]; with splits > 1 also float workspaces [splits, H, Nq, D] and [splits, H, Nq].
  uint16_t* out = nullptr;
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
  float* out_lse = nullptr;     // optionally float [H, Nq]: the log-sum-exps (natural log) of the scaled scores
  int splits = 1;
  int paged_min_blocks = 1;  // packed pages: resident blocks per multiprocessor the kernel is built for (1 or 2)
};

// Tiles of 64 keys the attention walks for these params (cache tiles + current-frame tiles).
int AttentionKeyTiles(const AttentionParams& p);
// Splits over the keys that fill the GPU for these params (1 = no combine step).
int ChooseAttentionSplits(const AttentionParams& p, int multiprocessors);
cudaError_t LaunchAttention(const AttentionParams& p, cudaStream_t stream);

// Up to kMaxFewQueries query rows over packed pages (16 or 32 slots) and the current frame, with
// q and the frame in bf16 (bf16_inputs is implied): a warp per 32-key tile rather than a block,
// for query counts too small to keep the kernel above busy. Splits over the keys as above (the
// same workspaces and combine); out_lse optional.
constexpr int kMaxFewQueries = 32;
int FewQueriesKeyTiles(const AttentionParams& p);
int ChooseFewQueriesSplits(const AttentionParams& p, int multiprocessors);
cudaError_t LaunchFewQueriesAttention(const AttentionParams& p, cudaStream_t stream);

struct MergeParams {
  // Two attentions of the same query rows over disjoint key sets: outputs [rows, 64] (the running
  // one bf16 or float, the new part bf16) and log-sum-exps float [rows] (natural log).
  const void* out = nullptr;
  bool out_bf16 = false;
  const float* lse = nullptr;
  const uint16_t* o = nullptr;
  const float* l = nullptr;
  int64_t rows = 0;
  // o's layout: rows h * queries + r at o + h * o_head_stride + r * o_row_stride (elements, both
  // positive and even; 64 contiguous values each).
  int64_t queries = 0, o_head_stride = 0, o_row_stride = 0;
  float* merged = nullptr;        // float [rows, 64]: the attention over both key sets
  uint16_t* merged_bf16 = nullptr;  // or, when given, that rounded to bf16 (merged unused)
  float* merged_lse = nullptr;    // float [rows] (nullptr: not needed)
  // Optionally (device int32 scalars): rows of zero keys and values among the running part's keys,
  // whose weight e^0 each is taken out of its sum; and the new part's key count, which when 0 makes
  // the part empty (ignored, whatever o and l hold). o == nullptr: no new part (only pad applies).
  const int32_t* pad = nullptr;
  const int32_t* part_keys = nullptr;
  // Optionally: the running part held in two pieces (cuDNN's whole query tiles and the query tail's
  // own attention, not concatenated): out [H, tail_from, 64] and lse [H, tail_from] for queries
  // below tail_from, out_tail [H, queries - tail_from, 64] and lse_tail for the rest (both
  // contiguous, of out's dtype; queries then set whether o is given or not).
  const void* out_tail = nullptr;
  const float* lse_tail = nullptr;
  int64_t tail_from = 0;
  // The tail's rows already attend over all the keys (an attention of their own over the pages,
  // RaggedPagesAttention): taken as they are, with neither the new part nor the pad.
  bool tail_final = false;
};

// Folds attention (o, l) into (out, lse): one kernel for what the log-sum-exp weights, lerp and
// logaddexp took in eager ops.
cudaError_t LaunchMergeByLse(const MergeParams& p, cudaStream_t stream);

struct SlotAttendParams {
  // One query token per head over a layer's slots and the current token (the camera trunk's slot
  // cache): q, k, v [H, D] and out [H, D] in float or bf16 (io_bf16); keys, values [H, S, D] in
  // float or bf16 (kv_bf16); valid [S] (empty slots take no weight).
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  bool io_bf16 = false;
  const void* keys = nullptr;
  const void* values = nullptr;
  bool kv_bf16 = false;
  const bool* valid = nullptr;
  int heads = 0, slots = 0, dim = 0;
  float scale = 1.0f;
  // Scratch float [heads, splits, dim + 2], splits = SlotAttendSplits(heads, slots).
  float* partial = nullptr;
  int splits = 0;
};

// softmax(q [K_valid ; k]^T * scale) [V_valid ; v] per head (float arithmetic, rounded once to the
// output's dtype), the slots split over blocks and folded by a second kernel; dim a multiple of 32
// up to kSlotAttendMaxDim, at most kSlotAttendMaxSlots slots.
inline constexpr int kSlotAttendMaxDim = 256;
inline constexpr int kSlotAttendMaxSlots = 8192;
int SlotAttendSplits(int heads, int slots);
cudaError_t LaunchSlotAttend(const SlotAttendParams& p, cudaStream_t stream);

struct DequantParams {
  PagesView pages;               // the layer's pages (pages.pages = all pages present)
  // [page_count] inclusive prefix sums of the chunk's valid counts; nullptr: each block sums the
  // counts of the pages before it (cheap for short chunks only).
  const int32_t* valid_prefix = nullptr;
  int heads = 0;
  int first_page = 0, page_count = 0;  // the chunk of pages to expand
  // Output bf16 rows [H, head_stride, D]: the chunk's valid slots in page order from row page_row.
  uint16_t* k_out = nullptr;
  uint16_t* v_out = nullptr;
  int64_t head_stride = 0;  // rows per head in the output
  // Optionally the current frame (bf16 [H, cur_tokens, D]), copied from row cur_row.
  const uint16_t* k_cur = nullptr;
  const uint16_t* v_cur = nullptr;
  int cur_tokens = 0, cur_row = 0;
  int page_row = 0;  // the row of the chunk's first valid slot (after a current frame put first)
  // Optionally (variable-length attention over rows only the device counts): written by the
  // chunk's last page, with count = page_row + the chunk's valid slots, {0, queries, 0,
  // max(0, count - lengths_base), max(0, lengths_base - count)}: the cumulative query and key
  // lengths of one sequence (the rows from lengths_base on), then the rows below lengths_base that
  // the count does not reach (int32 [5]).
  int32_t* lengths = nullptr;
  int queries = 0;
  int lengths_base = 0;
  // The rows of each head from the count up to zero_to are written with zeros (K and V): an
  // attention over a fixed number of rows then gives each of them the weight e^0 and nothing else,
  // which a merge can take out exactly (MergeParams::pad). zero_from sizes the work (the rows
  // below it are expected to be counted; when they are not, the blocks loop over the rest).
  int zero_from = 0, zero_to = 0;
};

// Expands pages [first_page, first_page + page_count) into bf16 K (norms folded in) and V rows,
// copies the current frame into its rows when given, writes the lengths when asked and zeroes the
// rows from the count up to zero_to.
cudaError_t LaunchDequantizePages(const DequantParams& p, int bits, cudaStream_t stream);

struct ScoreParams {
  const float* q_bar = nullptr;  // [M, D] pooled, head-averaged queries (rotated space for OScaR)
  int rows = 0, head_dim = 0, heads = 0;
  KvFormat format = KvFormat::kBf16;
  const uint16_t* k_dense = nullptr;
  int64_t dense_head_stride = 0;
  int dense_tokens = 0;
  PagesView pages;
  int bits = 4;
  float* scores = nullptr;  // [tokens] dense, or [P, G] (invalid slots get -inf)
};

// XStreamVGGT scores of every cached token: mean over rows of q_bar . mean_h(k_h).
cudaError_t LaunchTokenScores(const ScoreParams& p, cudaStream_t stream);

struct PooledQueryParams {
  // The frame's queries [heads, tokens, 64] (bf16 when `bf16`, else float) pooled as policy.h's
  // PooledQueries: the first `special` tokens alone, then pools of `pool` tokens (the last one
  // shorter), each row averaged over the pool then over the heads, into out float [rows, 64].
  const void* q = nullptr;
  bool bf16 = false;
  int heads = 0, tokens = 0, special = 0, pool = 1, rows = 0;
  float* out = nullptr;
};

// A block per output row, a thread per channel.
cudaError_t LaunchPooledQueries(const PooledQueryParams& p, cudaStream_t stream);

// The k highest of scores[0, units) in the order "highest score first, ties: the later unit
// first" (TopByScore's; -0 = +0, NaN above +inf), their indices written ascending to kept[0, k).
// One block (a radix select, then the ties and the placing in chunks of units per thread), for
// 1 <= k < units; k = 0 does nothing and k = units is refused (every unit: an arange).
cudaError_t LaunchTopKSelect(const float* scores, int units, int k, int64_t* kept, cudaStream_t stream);

struct PageScoreParams {
  const float* slot_scores = nullptr;  // [pages, slots]
  int pages = 0, slots = 0;            // slots <= 32
  const int32_t* valid = nullptr;      // valid slots of page i at valid[i * valid_stride]
  int64_t valid_stride = 1;
  bool mean = true;                    // mean of the valid slots (0 when none), else their max (-inf when none)
  float* out = nullptr;                // [pages]
};

// Page scores from slot scores over each page's valid slots (policy.h's TopPagesByMeanSlot /
// TopPagesByBestSlot before their top-k), a warp per page.
cudaError_t LaunchPageScores(const PageScoreParams& p, cudaStream_t stream);

// OScaR's rotation of 64-channel rows (x: bf16 when `bf16`, else float; rows of 64 contiguous
// values) by the normalised Hadamard matrix, written as float rows to out_f32 and/or as bf16 rows
// (rounded to nearest even) to out_bf16, either may be null; a warp per row. Two jobs in one launch
// (a frame's queries and keys); a job of 0 rows is none.
struct RotateJob {
  const void* x = nullptr;
  int64_t rows = 0;
  float* out_f32 = nullptr;
  void* out_bf16 = nullptr;
};
cudaError_t LaunchRotateRows(const RotateJob& a, const RotateJob& b, bool bf16, cudaStream_t stream);

inline constexpr int kMaxPageArrays = 6;  // a PagedKv's arrays

struct GatherPagesParams {
  const uint8_t* src[kMaxPageArrays] = {};
  uint8_t* dst[kMaxPageArrays] = {};
  int64_t page_bytes[kMaxPageArrays] = {};  // bytes of one page in each array
  int arrays = 0;
  const int64_t* middle = nullptr;  // [count - first] kept middle pages (relative to first), ascending
  int first = 0, count = 0;
  bool in_place = false;  // src == dst: only the kept pages past count move, into the evicted ones below it
};

// dst page j = src page j for j < first, src page first + middle[j - first] after that, for
// j < count, in every array (a block per page). src and dst must not overlap.
// In place (src == dst, in_place; kept = count - first middle pages stay): the kept middle pages
// at index kept or later move into the evicted middle pages below kept, the r-th of the one into
// the r-th of the other (both ascending); the first pages and the kept middle pages below kept stay
// where they are. No page is both read and written.
cudaError_t LaunchGatherPages(const GatherPagesParams& p, cudaStream_t stream);

struct SplitRowsParams {
  // A dense cache's eviction: the middle rows (rows first .. first + middle - 1) in stream order
  // are order[0, middle) (nullptr: in row order), of which the stream positions kept[0, count)
  // stay. Writes their rows to kept_rows[0, count) and the other middle rows, ascending, to
  // freed[0, middle - count).
  const int64_t* order = nullptr;
  const int64_t* kept = nullptr;
  int count = 0;
  int64_t first = 0;
  int middle = 0;
  int64_t* kept_rows = nullptr;
  int64_t* freed = nullptr;
};

// One block: a byte per middle row in shared memory (middle <= kSplitRowsMaxRows), then a block
// scan places the freed rows.
inline constexpr int kSplitRowsMaxRows = 40960;
cudaError_t LaunchSplitRows(const SplitRowsParams& p, cudaStream_t stream);

struct MoveRowsParams {
  // Dense bf16 caches k, v [heads, capacity, 64] (rows of 128 bytes): rows from + i move to rows
  // to[i], i < count, in every head of both. Sources and destinations must not overlap.
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int heads = 0;
  int64_t capacity = 0;
  int64_t from = 0;
  const int64_t* to = nullptr;
  int count = 0;
};

// A thread per 16 bytes of a moved row.
cudaError_t LaunchMoveRows(const MoveRowsParams& p, cudaStream_t stream);

// ---- 8-bit attention (kv_attention_int8.cu) ----
// Keys per tile of the 8-bit operands: rows are padded to whole tiles.
inline constexpr int kInt8AttentionTile = 64;

// Keys as INT8 for the 8-bit attention, from the tokens of two sources one after the other (A:
// rows [0, a_rows), B: the next b_rows; bf16 [H, *, 64] rows with the given head strides in
// elements, e.g. the cache's rows and the current frame), padded to `tiles` 64-token tiles:
// k8 int8 [H, tiles * 64, 64] and ks float [H, tiles], k ~ ks * k8 (a scale per tile; |ks| where
// LaunchExpandPagesInt8 negated it); padding rows are zeros.
struct Int8RowsParams {
  const uint16_t* k_a = nullptr;
  int64_t a_head_stride = 0;
  int a_rows = 0;
  const uint16_t* k_b = nullptr;
  int64_t b_head_stride = 0;
  int b_rows = 0;
  int heads = 0, tiles = 0;
  int8_t* k8 = nullptr;
  float* ks = nullptr;
};
cudaError_t LaunchQuantizeInt8Rows(const Int8RowsParams& p, cudaStream_t stream);

// The same keys (and the values as bf16 rows) in one pass from packed pages, in slot order: row
// page * G + slot for slot `slot` of pages [0, page_count), valid or not, then the current frame's
// cur_tokens rows (bf16 [H, cur_tokens, D]); k8/ks as Int8RowsParams with tiles = ceil(rows / 64),
// v bf16 [H, v_head_stride / D >= rows, D]. A valid slot's value as LaunchDequantizePages writes it
// and its key as LaunchQuantizeInt8Rows makes it from that row; a slot past its page's valid count
// (the pages' metadata, read on the device) gives zero rows. tile_mask [tiles]: bit i of tile j set
// where row 64 j + i is a valid slot or a current-frame row, for Int8AttentionParams::tile_mask;
// a tile with rows outside its mask has its key scale negated (ks: -scale), the attention's cue
// to read the mask (whole pages cost it no load).
// Nothing is read from or sized by the host but the page count, so the call can be graphed.
struct Int8PagesParams {
  PagesView pages;
  int page_count = 0;
  const uint16_t* k_cur = nullptr;
  const uint16_t* v_cur = nullptr;
  int cur_tokens = 0;
  int heads = 0, tiles = 0;
  int8_t* k8 = nullptr;
  float* ks = nullptr;
  uint16_t* v = nullptr;
  int64_t v_head_stride = 0;
  uint64_t* tile_mask = nullptr;
};
cudaError_t LaunchExpandPagesInt8(const Int8PagesParams& p, int bits, cudaStream_t stream);

struct Int8AttentionParams {
  const uint16_t* q = nullptr;  // bf16, element (h, n, c) at h * q_head_stride + n * q_row_stride + c
  int64_t q_head_stride = 0, q_row_stride = 0;
  int heads = 0, queries = 0;
  float scale = 0.125f;
  // Keys of Int8RowsParams (`rows` tokens in tiles = ceil(rows / 64), of which tile_mask may
  // leave some out) and the values of the same tokens as bf16 rows [H, >= rows, 64] with head
  // stride v_head_stride (elements).
  const int8_t* k8 = nullptr;
  const float* ks = nullptr;
  const uint16_t* v = nullptr;
  int64_t v_head_stride = 0;
  int rows = 0, tiles = 0;
  // [tiles] the keys each tile attends (bit i: row 64 j + i of tile j, LaunchExpandPagesInt8's),
  // read for the tiles whose ks is negative (others attend their rows before `rows`); or nullptr
  // (no negative ks).
  const uint64_t* tile_mask = nullptr;
  // Output bf16 with strides like q's; splits > 1: workspaces [splits, H, Nq, 64] of bf16 (the
  // splits' normalised rows: half the bytes of float, for one more bf16 rounding of each before the
  // combine) and [splits, H, Nq] of float (their log-sum-exps).
  uint16_t* out = nullptr;
  int64_t out_head_stride = 0, out_row_stride = 0;
  int splits = 1;
  uint16_t* partial_out = nullptr;
  float* partial_lse = nullptr;
  // The kernel's shape (kv_attention_int8.cu's kVariants: warps per block, 16-row query tiles per
  // warp, resident blocks per multiprocessor, mma.sync or warpgroup MMAs, the latter's P V
  // deferred or not), 0 .. Int8AttentionVariants() - 1.
  int variant = 0;
};
int Int8AttentionVariants();
// Whether a variant runs on the current device: the warpgroup kernel (variants 5-7) needs this
// build's sm_90a code (Int8WgmmaBuilt: CMAKE_CUDA_ARCHITECTURES 90a, which the CUDA LibTorch's
// CMake gets as TORCH_CUDA_ARCH_LIST 9.0a) and a device of compute capability 9.0; the others run
// on every device this build has code for.
bool Int8AttentionVariantAvailable(int variant);
bool Int8WgmmaBuilt();
// The current device's compute capability as 10 major + minor (90 for an H100/H200), -1 unknown.
int CurrentDeviceCapability();
// The default variant: the warpgroup kernel's where it runs (docs/perf.md, "Session 27"), else the
// mma.sync kernel's.
int DefaultInt8AttentionVariant();
// Blocks of the attention kernel per split (query tiles x heads).
int Int8AttentionBlocks(int queries, int heads, int variant);
// The most splits over the keys a call takes (the combine reads a row's log-sum-exps a lane each).
inline constexpr int kInt8MaxSplits = 32;
// Splits over the keys for these params that fill whole waves of resident blocks (the combine
// step's cost counted), at most kInt8MaxSplits.
int ChooseInt8AttentionSplits(const Int8AttentionParams& p, int multiprocessors);
cudaError_t LaunchInt8Attention(const Int8AttentionParams& p, cudaStream_t stream);

}  // namespace streamrecon::kernels
