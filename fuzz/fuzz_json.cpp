// libFuzzer target: the project's JSON parser and dumper (tokenizer/json_value.h). Property: whatever parses
// dumps to text that parses back to a value with the same dump (plain and sort_keys). InvalidRequest is the
// expected refusal; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/json_value.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  using namespace quatre::tokenizer;
  JsonValue value;
  try {
    value = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz input");
  } catch (const InvalidRequest&) {
    return 0;
  }
  // Dumps are compared rather than values: NaN != NaN.
  for (const JsonDumpOptions options : {JsonDumpOptions{}, JsonDumpOptions{.sort_keys = true}}) {
    const std::string dumped = dump_json(value, options);
    std::string again;
    try {
      again = dump_json(parse_json(dumped, "dumped JSON"), options);
    } catch (const InvalidRequest& e) {
      CHECK(false) << "the dump of a parsed value does not parse: " << e.what() << "\n" << dumped;
    }
    CHECK(again == dumped) << "round trip changed the dump:\n" << dumped << "\n" << again;
  }
  return 0;
}
