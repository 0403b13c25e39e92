// KdModel for the phi3_v backbone. The backward pass of the Phi-3 decoder, CLIP tower and HD glue is not
// written yet: loading one for training says so.
#include "core/kd_model.h"

namespace xv {

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string&, const LoraConfig&,
                                             uint64_t) {
  fail("{}: training the phi3_v backbone is not implemented yet (bert only)", dir);
}

}  // namespace xv
