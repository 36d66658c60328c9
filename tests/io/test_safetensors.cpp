// io/safetensors: write_safetensors + SafetensorsFile round trips, hand-built corrupt files of every kind
// the reader must refuse (each a LoadError naming the file and the tensor), every truncation of a valid file,
// and a seeded random mutation of the header that must never crash.
#include "io/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/error.h"
#include "io_test_util.h"

namespace quatre::io {
namespace {

using test::read_bytes;
using test::TempDir;
using test::write_bytes;

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file from its parts: the 8-byte length of `header`, `header`, then `data`.
std::string st(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

std::string zeros(size_t n) { return std::string(n, '\0'); }

// Byte i of tensor k in the round-trip files: distinct per tensor and position.
std::byte pattern(size_t k, size_t i) { return static_cast<std::byte>((k * 37 + i * 11 + 5) & 0xFF); }

std::vector<TensorSpec> mixed_specs() {
  return {
      {"model.layers.0.weight", DType::BF16, {3, 5}},
      {"a_first_by_name", DType::F32, {2, 3}},
      {"scalar", DType::F32, {}},
      {"empty", DType::U8, {0, 7}},
      {"ids", DType::I64, {4}},
      {"fp8", DType::F8_E4M3, {7}},
      {"i32", DType::I32, {1, 1, 1}},
      {"half", DType::F16, {3}},
      {"also_empty", DType::BF16, {5, 0}},
      {"odd", DType::U8, {3}},
  };
}

size_t spec_bytes(const TensorSpec& s) {
  size_t n = dtype_size(s.dtype);
  for (int64_t d : s.shape) n *= static_cast<size_t>(d);
  return n;
}

void write_pattern_file(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                        const std::map<std::string, std::string>& metadata = {}) {
  write_safetensors(
      path, specs,
      [&](size_t k, std::span<std::byte> out) {
        ASSERT_EQ(out.size(), spec_bytes(specs[k])) << specs[k].name;
        for (size_t i = 0; i < out.size(); ++i) out[i] = pattern(k, i);
      },
      metadata);
}

TEST(Safetensors, RoundTripNamesDtypesShapesBytesMetadata) {
  TempDir dir;
  const auto path = dir / "mixed.safetensors";
  const std::vector<TensorSpec> specs = mixed_specs();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"quatre.seed", "17"}, {"empty", ""}};
  write_pattern_file(path, specs, metadata);
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));

  const SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (size_t i = 1; i < file.tensors().size(); ++i) EXPECT_LT(file.tensors()[i - 1].name, file.tensors()[i].name);

  size_t offset = 0;  // the writer lays tensors out in declaration order
  for (size_t k = 0; k < specs.size(); ++k) {
    SCOPED_TRACE(specs[k].name);
    const TensorInfo* t = file.find(specs[k].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, specs[k].name);
    EXPECT_EQ(t->dtype, specs[k].dtype);
    EXPECT_EQ(t->shape, specs[k].shape);
    EXPECT_EQ(t->offset_bytes, offset);
    EXPECT_EQ(t->size_bytes, spec_bytes(specs[k]));
    int64_t numel = 1;
    for (int64_t d : specs[k].shape) numel *= d;
    EXPECT_EQ(t->numel(), numel);
    const auto data = file.data(*t);
    ASSERT_EQ(data.size(), spec_bytes(specs[k]));
    for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], pattern(k, i)) << "byte " << i;
    offset += spec_bytes(specs[k]);
  }
  EXPECT_EQ(file.find("missing"), nullptr);
  EXPECT_EQ(file.find(""), nullptr);
  EXPECT_EQ(file.find("__metadata__"), nullptr);

  const TensorInfo* scalar = file.find("scalar");
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->size_bytes, 4u);
  EXPECT_EQ(file.find("empty")->numel(), 0);
  EXPECT_EQ(file.find("empty")->size_bytes, 0u);
  EXPECT_TRUE(file.data(*file.find("also_empty")).empty());

  // The on-disk layout: header length a multiple of 8 (padded with spaces), data right after it.
  const std::string raw = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(raw[static_cast<size_t>(i)]);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + header_len + offset);
  EXPECT_EQ(raw[8], '{');
  const size_t close = raw.rfind('}', 8 + header_len - 1);
  for (size_t i = close + 1; i < 8 + header_len; ++i) EXPECT_EQ(raw[i], ' ') << "padding byte " << i;
  // The mapping is page-aligned, so the first tensor's bytes are 8-byte aligned in memory.
  const TensorInfo* first = file.find(specs[0].name);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(file.data(*first).data()) % 8, 0u);
}

TEST(Safetensors, RoundTripHeaderPaddingForEveryLengthModulo8) {
  TempDir dir;
  for (size_t len = 1; len <= 16; ++len) {  // name lengths that move the header length through every residue
    const auto path = dir / ("pad" + std::to_string(len) + ".safetensors");
    write_pattern_file(path, {{std::string(len, 'n'), DType::U8, {3}}});
    const SafetensorsFile file(path);
    ASSERT_EQ(file.tensors().size(), 1u);
    EXPECT_EQ(file.tensors()[0].name, std::string(len, 'n'));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(file.data(file.tensors()[0]).data()) % 8, 0u);
    EXPECT_EQ(read_bytes(path).size() % 8, 3u);  // 8 + padded header + 3 data bytes
  }
}

TEST(Safetensors, RoundTripEmptyFileAndOnlyZeroSizeTensors) {
  TempDir dir;
  write_pattern_file(dir / "none.safetensors", {});
  const SafetensorsFile none(dir / "none.safetensors");
  EXPECT_TRUE(none.tensors().empty());
  EXPECT_TRUE(none.metadata().empty());

  write_pattern_file(dir / "zero.safetensors", {{"a", DType::F32, {0}}, {"b", DType::BF16, {2, 0, 3}}}, {{"k", "v"}});
  const SafetensorsFile zero(dir / "zero.safetensors");
  ASSERT_EQ(zero.tensors().size(), 2u);
  EXPECT_EQ(zero.find("b")->shape, (std::vector<int64_t>{2, 0, 3}));
  EXPECT_EQ(zero.metadata().at("k"), "v");
}

TEST(Safetensors, WriterRefusesDuplicateNames) {
  TempDir dir;
  EXPECT_LOAD_ERROR(write_pattern_file(dir / "dup.safetensors", {{"x", DType::U8, {1}}, {"x", DType::U8, {1}}}),
                    "dup.safetensors", "'x'", "twice");
}

TEST(Safetensors, WriterOverwritesAnExistingFile) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  write_pattern_file(path, {{"old", DType::F32, {100}}});
  write_pattern_file(path, {{"new", DType::U8, {1}}});
  const SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 1u);
  EXPECT_EQ(file.tensors()[0].name, "new");
}

// Valid hand-built files the strict checks must not refuse.
TEST(Safetensors, AcceptsValidHandBuiltVariants) {
  TempDir dir;
  struct Case {
    const char* name;
    std::string bytes;
    size_t tensors;
  };
  const Case cases[] = {
      // header order differs from data order; trailing whitespace inside the header length
      {"reordered", st(R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"data_offsets":[0,4],"shape":[],"dtype":"F32"}}   )",
                       zeros(6)), 2},
      // zero-size tensors at the start, in the middle (sharing an offset) and at the end
      {"zero_sizes", st(R"({"z0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                        R"("z1":{"dtype":"I64","shape":[3,0],"data_offsets":[4,4]},"z2":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
                        zeros(4)), 4},
      // an empty shape dimension may be huge when another is 0
      {"zero_with_big_dim", st(R"({"z":{"dtype":"U8","shape":[0,1000000000000],"data_offsets":[0,0]}})"), 1},
      {"metadata_only", st(R"({"__metadata__":{"format":"pt","":""}})"), 0},
      {"exactly_8_dims", st(R"({"t":{"dtype":"U8","shape":[1,1,1,1,1,1,1,2],"data_offsets":[0,2]}})", zeros(2)), 1},
      {"escaped_unicode_name", st(R"({"caf\u00e9 \ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", zeros(1)), 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = dir / (std::string(c.name) + ".safetensors");
    write_bytes(path, c.bytes);
    try {
      const SafetensorsFile file(path);
      EXPECT_EQ(file.tensors().size(), c.tensors);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "refused a valid file: " << e.what();
    }
  }
  const SafetensorsFile named(dir / "escaped_unicode_name.safetensors");
  EXPECT_EQ(named.tensors()[0].name, "caf\xc3\xa9 \xf0\x9f\x98\x80");
}

// --- Corruptions: one hand-built file per kind; each must be a LoadError naming the file and the pieces.

struct Corruption {
  std::string name;
  std::string bytes;
  std::vector<std::string> pieces;  // besides the file's path
};

std::string one(std::string_view entry_json) { return std::string(R"({"t":)") + std::string(entry_json) + "}"; }
constexpr std::string_view kGoodEntry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

std::vector<Corruption> corruptions() {
  const std::string good = one(kGoodEntry);
  const std::string ab_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)";
  return {
      {"file_empty", "", {"0 bytes", "too short"}},
      {"file_7_bytes", std::string("\x02\0\0\0\0\0\0", 7), {"7 bytes", "too short"}},
      {"header_length_0", le64(0), {"header length 0"}},
      {"header_length_0_with_data", le64(0) + "{}      ", {"header length 0"}},
      {"header_length_1", le64(1) + "{", {"header length 1"}},
      {"header_length_past_end", le64(64) + good + zeros(8), {"header length 64", "past the end"}},
      {"header_length_one_past_end", le64(good.size() + 1) + good, {"past the end"}},
      {"header_length_above_cap", le64((100ull << 20) + 1) + "{}", {"104857601", "exceeds the limit"}},
      {"header_length_u64_max", le64(std::numeric_limits<uint64_t>::max()) + "{}", {"exceeds the limit"}},
      {"header_leading_space", st(" " + good, zeros(8)), {"does not start with '{'"}},
      {"header_json_array", st(R"([{"t":1}])"), {"'{'"}},
      {"header_json_string", st(R"("{}")"), {"'{'"}},
      {"json_truncated", st(R"({"t":{"dtype":"F32")"), {"not valid JSON"}},
      {"json_trailing_garbage", st(good + "x", zeros(8)), {"not valid JSON"}},
      {"json_two_objects", st(good + "{}", zeros(8)), {"not valid JSON"}},
      // nlohmann stops at a NUL byte: anything after one would be silently ignored.
      {"json_nul_padding", st(good + zeros(6), zeros(8)), {"not valid JSON", "NUL byte"}},
      {"json_nul_then_garbage", st(good + std::string(1, '\0') + R"(,"u":{"dtype":"F64"}})", zeros(8)), {"not valid JSON", "NUL byte"}},
      {"json_single_quotes", st(R"({'t':1})"), {"not valid JSON"}},
      {"utf8_invalid_byte_in_name", st("{\"t\xff\":" + std::string(kGoodEntry) + "}", zeros(8)), {"not valid JSON"}},
      {"utf8_overlong_in_name", st("{\"t\xc0\xaf\":" + std::string(kGoodEntry) + "}", zeros(8)), {"not valid JSON"}},
      {"utf8_truncated_sequence", st("{\"t\xe2\x82\":" + std::string(kGoodEntry) + "}", zeros(8)), {"not valid JSON"}},
      {"utf8_encoded_surrogate", st("{\"t\xed\xa0\x80\":" + std::string(kGoodEntry) + "}", zeros(8)), {"not valid JSON"}},
      {"utf8_lone_surrogate_escape", st(R"({"t\ud800":)" + std::string(kGoodEntry) + "}", zeros(8)), {"not valid JSON"}},
      {"utf8_invalid_in_metadata", st("{\"__metadata__\":{\"k\":\"\x80\"}}"), {"not valid JSON"}},
      {"duplicate_tensor_name", st(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"t":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                                   zeros(8)), {"'t'", "twice"}},
      {"duplicate_metadata", st(R"({"__metadata__":{},"__metadata__":{}})"), {"'__metadata__'", "twice"}},
      {"entry_array", st(one("[1,2]")), {"'t'", "not an object"}},
      {"entry_null", st(one("null")), {"'t'", "not an object"}},
      {"entry_string", st(one(R"("F32")")), {"'t'", "not an object"}},
      {"dtype_missing", st(one(R"({"shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'dtype'"}},
      {"dtype_number", st(one(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'dtype'"}},
      {"dtype_null", st(one(R"({"dtype":null,"shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'dtype'"}},
      {"dtype_F64", st(one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "unsupported dtype 'F64'"}},
      {"dtype_lowercase_f32", st(one(R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'f32'"}},
      {"dtype_empty", st(one(R"({"dtype":"","shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "unsupported dtype ''"}},
      {"shape_missing", st(one(R"({"dtype":"F32","data_offsets":[0,8]})"), zeros(8)), {"'t'", "'shape'"}},
      {"shape_number", st(one(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'shape'"}},
      {"shape_object", st(one(R"({"dtype":"F32","shape":{"0":2},"data_offsets":[0,8]})"), zeros(8)), {"'t'", "'shape'"}},
      {"shape_negative", st(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "negative"}},
      {"shape_negative_pair", st(one(R"({"dtype":"F32","shape":[-1,-2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "negative"}},
      {"shape_float", st(one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "non-integer"}},
      {"shape_fraction", st(one(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "non-integer"}},
      {"shape_string", st(one(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "non-integer"}},
      {"shape_bool", st(one(R"({"dtype":"U8","shape":[true],"data_offsets":[0,1]})"), zeros(1)), {"'t'", "non-integer"}},
      {"shape_nested", st(one(R"({"dtype":"U8","shape":[[1]],"data_offsets":[0,1]})"), zeros(1)), {"'t'", "non-integer"}},
      {"shape_9_dims", st(one(R"({"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]})"), zeros(1)), {"'t'", "rank 9"}},
      {"shape_dim_above_int64", st(one(R"({"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,1]})"), zeros(1)),
       {"'t'", "too large"}},
      {"shape_product_overflow", st(one(R"({"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0]})")),
       {"'t'", "overflows"}},
      {"shape_product_overflow_by_dtype", st(one(R"({"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,0]})")),
       {"'t'", "overflows"}},
      // Empty, but its strides do not fit in int64: numel() and any stride arithmetic would overflow.
      {"shape_product_overflow_with_zero", st(one(R"({"dtype":"U8","shape":[4611686018427387904,2,0],"data_offsets":[0,0]})")),
       {"'t'", "overflows"}},
      {"offsets_missing", st(one(R"({"dtype":"F32","shape":[2]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_number", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":8})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_one_element", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_three_elements", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_empty", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_negative", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), zeros(8)), {"'t'", "non-negative"}},
      {"offsets_float", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0.0,8.0]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_strings", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":["0","8"]})"), zeros(8)), {"'t'", "'data_offsets'"}},
      {"offsets_end_before_begin", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), zeros(8)),
       {"'t'", "[8, 0]", "end before begin"}},
      {"byte_size_too_small", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"), zeros(4)), {"'t'", "4 bytes", "needs 8"}},
      {"byte_size_too_large", st(one(R"({"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]})"), zeros(16)), {"'t'", "16 bytes", "needs 12"}},
      {"byte_size_scalar", st(one(R"({"dtype":"F32","shape":[],"data_offsets":[0,0]})")), {"'t'", "needs 4"}},
      {"overlap", st(ab_header + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", zeros(12)), {"'b'", "overlap"}},
      {"overlap_same_range", st(ab_header + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", zeros(8)), {"overlap"}},
      {"overlap_contained", st(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                               zeros(8)), {"'b'", "overlap"}},
      {"gap_between", st(ab_header + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", zeros(20)), {"'b'", "gap"}},
      {"gap_at_start", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), zeros(12)), {"'t'", "starts at 4", "gap"}},
      {"trailing_bytes", st(good, zeros(12)), {"trailing bytes"}},
      {"trailing_bytes_without_tensors", st(R"({"__metadata__":{}})", zeros(3)), {"trailing bytes"}},
      {"tensor_past_end", st(good, zeros(4)), {"'t'", "past the end"}},
      {"tensor_past_end_no_data", st(good), {"'t'", "past the end"}},
      {"tensor_past_end_huge_offsets",
       st(one(R"({"dtype":"U8","shape":[8],"data_offsets":[18446744073709551607,18446744073709551615]})"), zeros(8)),
       {"'t'", "past the end"}},
      {"tensor_offset_above_u64", st(one(R"({"dtype":"U8","shape":[8],"data_offsets":[0,18446744073709551616]})"), zeros(8)),
       {"'t'", "'data_offsets'"}},
      {"metadata_string", st(R"({"__metadata__":"pt"})"), {"__metadata__", "not an object"}},
      {"metadata_array", st(R"({"__metadata__":["pt"]})"), {"__metadata__", "not an object"}},
      {"metadata_int_value", st(R"({"__metadata__":{"format":"pt","n":3}})"), {"__metadata__['n']", "not a string"}},
      {"metadata_null_value", st(R"({"__metadata__":{"n":null}})"), {"__metadata__['n']", "not a string"}},
      {"metadata_object_value", st(R"({"__metadata__":{"n":{"a":"b"}}})"), {"__metadata__['n']", "not a string"}},
      {"unknown_field", st(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"offset":0})"), zeros(8)),
       {"'t'", "unknown field 'offset'"}},
      {"unknown_field_case", st(one(R"({"DTYPE":"F32","shape":[2],"data_offsets":[0,8]})"), zeros(8)), {"'t'", "unknown field 'DTYPE'"}},
      {"empty_tensor_name", st(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", zeros(8)), {"empty name"}},
  };
}

class SafetensorsCorruption : public ::testing::TestWithParam<Corruption> {};

TEST_P(SafetensorsCorruption, IsALoadErrorNamingFileAndTensor) {
  const Corruption& c = GetParam();
  TempDir dir;
  const auto path = dir / (c.name + ".safetensors");
  write_bytes(path, c.bytes);
  const std::string message = EXPECT_LOAD_ERROR(SafetensorsFile{path}, path.string());
  for (const std::string& piece : c.pieces) {
    EXPECT_NE(message.find(piece), std::string::npos) << "the message lacks \"" << piece << "\": " << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, SafetensorsCorruption, ::testing::ValuesIn(corruptions()),
                         [](const ::testing::TestParamInfo<Corruption>& p) { return p.param.name; });

TEST(Safetensors, ADirectoryOrAMissingPathIsALoadError) {
  TempDir dir;
  std::filesystem::create_directory(dir / "shard.safetensors");
  EXPECT_LOAD_ERROR(SafetensorsFile{dir / "shard.safetensors"}, (dir / "shard.safetensors").string(), "not a regular file");
  EXPECT_LOAD_ERROR(SafetensorsFile{dir / "absent.safetensors"}, (dir / "absent.safetensors").string(), "cannot open");
  EXPECT_LOAD_ERROR(SafetensorsFile{dir / "no_dir" / "x.safetensors"}, "no_dir", "cannot open");
}

// parse_safetensors (what the fuzz target calls) validates bytes in memory exactly as SafetensorsFile does a file.
TEST(Safetensors, ParseFromMemoryMatchesTheFileReader) {
  TempDir dir;
  const std::string bytes = st(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                               R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", zeros(6));
  write_bytes(dir / "m.safetensors", bytes);
  const SafetensorsFile file(dir / "m.safetensors");
  const SafetensorsHeader h = parse_safetensors({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "mem");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[1].offset_bytes, file.tensors()[1].offset_bytes);
  EXPECT_EQ(h.metadata, file.metadata());
  EXPECT_EQ(h.data_start, bytes.size() - 6);
  const std::string truncated = bytes.substr(0, bytes.size() - 1);
  EXPECT_LOAD_ERROR(parse_safetensors({reinterpret_cast<const std::byte*>(truncated.data()), truncated.size()}, "mem"),
                    "mem", "past the end");
}

// Every strict prefix of a valid file fails cleanly: inside the length, the header, or the data.
TEST(Safetensors, EveryTruncationOfAValidFileIsALoadError) {
  TempDir dir;
  const auto valid = dir / "valid.safetensors";
  write_pattern_file(valid, mixed_specs(), {{"format", "pt"}});
  const std::string bytes = read_bytes(valid);
  ASSERT_NO_THROW(SafetensorsFile{valid});
  const auto cut = dir / "cut.safetensors";
  for (size_t size = 0; size < bytes.size(); ++size) {
    SCOPED_TRACE("truncated to " + std::to_string(size) + " of " + std::to_string(bytes.size()) + " bytes");
    write_bytes(cut, std::string_view(bytes).substr(0, size));
    EXPECT_LOAD_ERROR(SafetensorsFile{cut}, cut.string());
  }
  // A truncation inside the last tensor names it.
  const SafetensorsFile file(valid);
  const TensorInfo* last = nullptr;
  for (const TensorInfo& t : file.tensors()) {
    if (last == nullptr || t.offset_bytes + t.size_bytes > last->offset_bytes + last->size_bytes) last = &t;
  }
  write_bytes(cut, std::string_view(bytes).substr(0, bytes.size() - 1));
  EXPECT_LOAD_ERROR(SafetensorsFile{cut}, cut.string(), "'" + last->name + "'", "past the end");
}

// Seeded random mutations of the length and header: each file either loads (and then is self-consistent)
// or throws LoadError; anything else (another exception, a crash, a sanitizer report) is a bug.
TEST(Safetensors, RandomHeaderMutationsLoadOrThrowLoadError) {
  TempDir dir;
  const auto valid = dir / "valid.safetensors";
  write_pattern_file(valid, {{"w", DType::BF16, {2, 3}}, {"s", DType::F32, {}}, {"e", DType::U8, {0}}, {"b", DType::U8, {5}}},
                     {{"format", "pt"}});
  const std::string original = read_bytes(valid);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(original[static_cast<size_t>(i)]);
  const size_t prefix = 8 + header_len;

  std::mt19937_64 rng(20260311);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::string json_chars = "{}[]\":,-.0123456789eE+ \\tfnu";
  const auto path = dir / "mutant.safetensors";
  int loaded = 0, rejected = 0;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    std::string bytes = original;
    const int n_mutations = 1 + static_cast<int>(pick(4));
    for (int m = 0; m < n_mutations; ++m) {
      const size_t end = std::min(bytes.size(), prefix);
      const size_t at = pick(end);
      switch (pick(7)) {
        case 0: bytes[at] = static_cast<char>(bytes[at] ^ (1 << pick(8))); break;                      // flip a bit
        case 1: bytes[at] = static_cast<char>(rng() & 0xFF); break;                                     // random byte
        case 2: bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), static_cast<char>(rng() & 0xFF)); break;
        case 3: bytes.erase(at, 1); break;
        case 4: bytes[at] = json_chars[pick(json_chars.size())]; break;                                // JSON-ish byte
        case 5: {  // change a digit of the header: shapes and offsets stay well-formed but disagree
          std::vector<size_t> digits;
          for (size_t i = 8; i < end; ++i) {
            if (bytes[i] >= '0' && bytes[i] <= '9') digits.push_back(i);
          }
          if (!digits.empty()) bytes[digits[pick(digits.size())]] = static_cast<char>('0' + pick(10));
          break;
        }
        default: {  // nudge the length field
          uint64_t len = 0;
          for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
          len += static_cast<uint64_t>(static_cast<int64_t>(pick(17)) - 8);
          bytes.replace(0, 8, le64(len));
          break;
        }
      }
      if (bytes.size() < 8) break;
    }
    write_bytes(path, bytes);
    try {
      const SafetensorsFile file(path);
      ++loaded;
      size_t covered = 0;
      for (const TensorInfo& t : file.tensors()) {
        ASSERT_EQ(file.data(t).size(), t.size_bytes) << "iteration " << iteration;
        ASSERT_EQ(static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype), t.size_bytes) << "iteration " << iteration;
        covered += t.size_bytes;
      }
      ASSERT_LE(covered, bytes.size()) << "iteration " << iteration;
    } catch (const LoadError& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iteration << ": threw a non-LoadError: " << e.what();
    }
  }
  // Both outcomes occur, so the mutations reach past the first checks and the test can see a crash.
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace quatre::io
