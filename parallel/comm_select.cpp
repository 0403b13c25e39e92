#include "parallel/comm_select.h"

#include "core/error.h"
#ifdef XV_HAVE_NCCL
#include "parallel/comm_nccl.h"
#endif

namespace xv::par {

bool nccl_compiled() {
#ifdef XV_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> communicator_for(Device d, Communicator& host) {
  XV_CHECK(host.buffers() == DeviceKind::cpu, "communicator_for: the {} communicator given does not move host "
           "buffers", host.backend());
  if (d.is_cpu()) return host.split(0, host.rank());
#ifdef XV_HAVE_NCCL
  return make_nccl_communicator(host, d.index);
#else
  fail("{}: device buffers need NCCL, which this build does not have (CUDA and NCCL are found at configure time)",
       d.str());
#endif
}

}  // namespace xv::par
