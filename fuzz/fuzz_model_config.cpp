// libFuzzer target: config.json / params.json text through both ModelConfig parsers, then the writers and the
// parameter counts on whatever they accept. LoadError is the expected refusal; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/error.h"
#include "io/model_config.h"

namespace {

using namespace quatre;

// An accepted config must survive its own writer: parse(write(c)) is accepted and writes the same text.
void check_accepted(const io::ModelConfig& config) {
  (void)io::count_params(config);
  (void)io::kv_bytes_per_token(config.text);
  const auto hf = io::to_hf_config(config);
  const auto native = io::to_params_json(config);
  (void)io::to_hf_generation_config(config);
  CHECK(io::to_hf_config(io::parse_hf_config(nlohmann::json(hf), "written config.json")) == hf) << hf.dump();
  CHECK(io::to_params_json(io::parse_params_json(nlohmann::json(native), "written params.json")) == native)
      << native.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;  // not JSON: read_json_file's LoadError, not the parsers' business
  try {
    check_accepted(io::parse_hf_config(doc, "fuzz config.json"));
  } catch (const LoadError&) {
  }
  try {
    check_accepted(io::parse_params_json(doc, "fuzz params.json"));
  } catch (const LoadError&) {
  }
  return 0;
}
