// Tests of loading tekken.json (PROTOCOL §1.1): a valid synthetic file, then one test per loading rule, each
// checking that the LoadError names the file, the field and the value.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "tekken_test_util.h"

namespace quatre::tokenizer {
namespace {

using nlohmann::json;
using testing::base64_encode;
using testing::load_synthetic;
using testing::synthetic_tekken_json;

json small_doc() { return synthetic_tekken_json({"ab", "abc", " a"}); }

// Loads `doc` expecting a LoadError whose message contains `want`.
void expect_load_error(const json& doc, const std::string& want) {
  try {
    load_synthetic(doc);
    ADD_FAILURE() << "loaded, expected an error containing: " << want;
  } catch (const LoadError& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << "message: " << e.what() << "\nwant: " << want;
  }
}

TEST(TekkenLoad, LoadsASyntheticFile) {
  const Tekken t = load_synthetic(small_doc());
  EXPECT_EQ(t.version(), "v15");
  EXPECT_EQ(t.n_special(), 100);
  EXPECT_EQ(t.vocab_size(), 100 + 259);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.special_id("[INST]"), 3);
  EXPECT_EQ(t.special_id("[THINK]"), 34);
  EXPECT_EQ(t.special_id("[/MODEL_SETTINGS]"), 37);
  EXPECT_EQ(t.special_id("<SPECIAL_20>"), 20);  // unlisted slots get filler names
  EXPECT_EQ(t.special_id("<SPECIAL_99>"), 99);
  EXPECT_EQ(t.special_id("<SPECIAL_100>"), std::nullopt);
  EXPECT_EQ(t.special_id("[AUDIO]"), std::nullopt);
  EXPECT_EQ(t.require_special("[ARGS]"), 32);
  EXPECT_THROW(t.require_special("[AUDIO]"), LoadError);
  EXPECT_EQ(t.token_bytes(3), "[INST]");
  EXPECT_EQ(t.token_bytes(100 + 'A'), "A");
  EXPECT_EQ(t.token_bytes(100 + 257), "abc");
  EXPECT_THROW(t.token_bytes(359), InvalidRequest);
  EXPECT_THROW(t.token_bytes(-1), InvalidRequest);
  ASSERT_TRUE(t.image_config().has_value());
  EXPECT_EQ(t.image_config()->image_patch_size, 14);
  EXPECT_EQ(t.image_config()->max_image_size, 1540);
  EXPECT_EQ(t.image_config()->spatial_merge_size, 2);
  ASSERT_EQ(t.model_settings().size(), 1u);
  const ModelSettingSpec& s = t.model_settings()[0];
  EXPECT_EQ(s.name, "reasoning_effort");
  EXPECT_TRUE(s.accepts_none);
  EXPECT_EQ(s.default_value, "none");
  EXPECT_EQ(s.values, (std::vector<std::string>{"none", "high"}));
}

TEST(TekkenLoad, IgnoresUnknownKeysAndUnusedEntries) {
  json doc = small_doc();
  doc["type"] = "Tekken";
  doc["version"] = 1;
  doc["config"]["something_new"] = {1, 2};
  doc["audio"] = {{"sampling_rate", 16000}};
  doc["special_tokens"][0]["extra"] = true;
  // Rule 1: only the first default_vocab_size - n_special entries are used; the rest is not even validated.
  doc["vocab"].push_back({{"rank", 12345}, {"token_bytes", "!!"}});
  doc["config"]["num_vocab_tokens"] = 150000;
  const Tekken t = load_synthetic(doc);
  EXPECT_EQ(t.vocab_size(), 359);
}

TEST(TekkenLoad, RankMustEqualPosition) {
  json doc = small_doc();
  doc["vocab"][257]["rank"] = 258;
  expect_load_error(doc, "synthetic.json: vocab[257].rank is 258, expected 257");
}

TEST(TekkenLoad, EntryKeysAreExactlyRankTokenBytesTokenStr) {
  json doc = small_doc();
  doc["vocab"][256].erase("token_str");
  expect_load_error(doc, "vocab[256] has keys [rank, token_bytes], expected exactly rank, token_bytes, token_str");
  doc = small_doc();
  doc["vocab"][3]["score"] = 1.0;
  expect_load_error(doc, "vocab[3] has keys [rank, score, token_bytes, token_str]");
  doc = small_doc();
  doc["vocab"][256]["token_str"] = 5;
  expect_load_error(doc, "vocab[256].token_str is an integer, expected a string or null");
}

TEST(TekkenLoad, FirstRanksAreTheSingleBytes) {
  json doc = small_doc();
  doc["vocab"][65]["token_bytes"] = base64_encode("B");
  expect_load_error(doc, "vocab[65].token_bytes decodes to 1 bytes, expected the single byte 0x41");
}

TEST(TekkenLoad, ByteStringsAreUnique) {
  json doc = small_doc();
  doc["vocab"][258]["token_bytes"] = base64_encode("ab");
  expect_load_error(doc, "vocab[258].token_bytes 'YWI=' repeats the bytes of vocab[256]");
}

TEST(TekkenLoad, TokenBytesMustBeBase64) {
  json doc = small_doc();
  doc["vocab"][256]["token_bytes"] = "YW*=";
  expect_load_error(doc, "vocab[256].token_bytes 'YW*=' is not valid base64");
  doc["vocab"][256]["token_bytes"] = "YWI";
  expect_load_error(doc, "vocab[256].token_bytes 'YWI' is not valid base64");
}

TEST(TekkenLoad, VocabMustCoverTheInnerRanks) {
  json doc = small_doc();
  doc["config"]["default_vocab_size"] = 400;
  expect_load_error(doc, "vocab has 259 entries, expected at least 300");
  doc["config"]["default_vocab_size"] = 300;
  expect_load_error(doc, "config.default_vocab_size is 300 with 100 special tokens, which leaves 200 BPE ranks");
}

TEST(TekkenLoad, VersionMustBeKnown) {
  json doc = small_doc();
  doc["config"]["version"] = "v14";
  expect_load_error(doc, "config.version is 'v14', expected one of v1, v2, v3, v7, v11, v13, v15");
  doc["config"]["version"] = 15;
  expect_load_error(doc, "config.version is an integer, expected a string");
  doc["config"].erase("version");
  expect_load_error(doc, "config.version is missing");
}

TEST(TekkenLoad, ConfigFieldsAreTyped) {
  json doc = small_doc();
  doc["config"]["default_num_special_tokens"] = "100";
  expect_load_error(doc, "config.default_num_special_tokens is a string, expected an integer");
  doc = small_doc();
  doc["config"]["default_vocab_size"] = -5;
  expect_load_error(doc, "config.default_vocab_size is -5, expected a positive 32-bit integer");
  doc = small_doc();
  doc.erase("config");
  expect_load_error(doc, "synthetic.json: config is missing");
}

TEST(TekkenLoad, SpecialTokenRules) {
  json doc = small_doc();
  doc["special_tokens"][5]["token_str"] = "[INST]";
  expect_load_error(doc, "special_tokens name '[INST]' is used by both id 3 and id 5");
  doc = small_doc();
  doc["special_tokens"][4]["rank"] = 100;
  expect_load_error(doc, "special_tokens[4].rank is 100, expected 0 <= rank < default_num_special_tokens = 100");
  doc = small_doc();
  doc["special_tokens"][4]["rank"] = 3;
  expect_load_error(doc, "special_tokens[4].rank is 3, which an earlier entry already uses");
  doc = small_doc();
  doc["special_tokens"][4]["token_str"] = "<SPECIAL_50>";  // collides with the filler name of slot 50
  expect_load_error(doc, "special_tokens name '<SPECIAL_50>' is used by both id 4 and id 50");
  doc = small_doc();
  doc["special_tokens"][1]["token_str"] = "<bos>";
  expect_load_error(doc, "special_tokens has no '<s>' (BOS)");
  doc = synthetic_tekken_json({}, 30);
  for (int id = 20; id < 32; ++id) doc["special_tokens"].push_back({{"rank", id}, {"token_str", "x" + std::to_string(id)}});
  expect_load_error(doc, "special_tokens has 32 entries, more than default_num_special_tokens = 30");
}

TEST(TekkenLoad, SpecialTokensListIsMandatoryAfterV7) {
  json doc = small_doc();
  doc.erase("special_tokens");
  expect_load_error(doc, "special_tokens is missing (required for version v15 > v7)");
  doc.erase("model_settings_builder");
  doc["config"]["version"] = "v7";
  const Tekken t = load_synthetic(doc);  // built-in names of ids 0..19
  EXPECT_EQ(t.special_id("[INST]"), 3);
  EXPECT_EQ(t.special_id("[TOOL_CONTENT]"), 19);
  EXPECT_EQ(t.special_id("<SPECIAL_20>"), 20);
  EXPECT_EQ(t.special_id("[THINK]"), std::nullopt);
}

TEST(TekkenLoad, ImageConfig) {
  json doc = small_doc();
  doc["image"].erase("spatial_merge_size");
  EXPECT_EQ(load_synthetic(doc).image_config()->spatial_merge_size, 1);  // default
  doc["image"]["image_patch_size"] = 0;
  expect_load_error(doc, "image.image_patch_size is 0, expected a positive 32-bit integer");
  doc = small_doc();
  doc.erase("image");
  EXPECT_FALSE(load_synthetic(doc).image_config().has_value());
  doc["multimodal"] = {{"image_patch_size", 16}, {"max_image_size", 1024}};
  expect_load_error(doc, "multimodal is a deprecated alias of image, only legal up to v11 (the file is v15)");
  doc.erase("model_settings_builder");
  doc["config"]["version"] = "v11";
  EXPECT_EQ(load_synthetic(doc).image_config()->image_patch_size, 16);
  doc["image"] = doc["multimodal"];
  expect_load_error(doc, "multimodal and image are both present");
}

TEST(TekkenLoad, ModelSettingsBuilder) {
  json doc = small_doc();
  doc["config"]["version"] = "v13";
  expect_load_error(doc, "model_settings_builder is only legal from v15 on (the file is v13)");
  doc = small_doc();
  doc["model_settings_builder"]["reasoning_effort"]["default"] = "low";
  expect_load_error(doc, "model_settings_builder.reasoning_effort.default is 'low', which is not one of its values");
  doc = small_doc();
  doc["model_settings_builder"]["reasoning_effort"]["type"] = "range";
  expect_load_error(doc, "model_settings_builder.reasoning_effort.type is 'range', expected 'enum'");
  doc = small_doc();
  doc["model_settings_builder"]["reasoning_effort"]["default"] = nullptr;
  doc["model_settings_builder"]["reasoning_effort"]["accepts_none"] = false;
  const Tekken t = load_synthetic(doc);
  EXPECT_FALSE(t.model_settings()[0].accepts_none);
  EXPECT_EQ(t.model_settings()[0].default_value, std::nullopt);
}

TEST(TekkenLoad, BadPatternFailsLoudly) {
  json doc = small_doc();
  doc["config"]["pattern"] = "(unclosed";
  expect_load_error(doc, "synthetic.json: config.pattern does not compile with PCRE2");
}

TEST(TekkenLoad, FileErrors) {
  EXPECT_THROW(Tekken::from_json("{\"config\": ", "broken.json"), LoadError);
  EXPECT_THROW(Tekken::from_json("[1, 2]", "array.json"), LoadError);
  try {
    Tekken::load("/nonexistent/tekken.json");
    ADD_FAILURE() << "loaded a missing file";
  } catch (const LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tekken.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quatre::tokenizer
