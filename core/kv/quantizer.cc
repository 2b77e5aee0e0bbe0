// Host fp16 conversions of the shared quantiser (quantizer.h), through c10::Half: IEEE binary16,
// round to nearest even, the same results as the CUDA intrinsics.
#include "core/kv/quantizer.h"

#include <c10/util/Half.h>

namespace streamrecon::kv {

uint16_t HostFloatToHalfBits(float x) { return c10::Half(x).x; }

float HostHalfBitsToFloat(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

}  // namespace streamrecon::kv
