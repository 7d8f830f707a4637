#include "common/secret.h"

#include <openssl/crypto.h>

namespace certcast {

void CleanseMemory(void* p, std::size_t n) {
  if (p != nullptr && n > 0) OPENSSL_cleanse(p, n);
}

}  // namespace certcast
