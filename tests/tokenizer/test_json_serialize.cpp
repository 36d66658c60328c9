// JSON parse + dump against Python's json.loads / json.dumps(ensure_ascii=False): every example of
// PROTOCOL §2.7, with the exact strings CPython 3 produces.
#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/json_value.h"

namespace quatre::tokenizer {
namespace {

// json.dumps(json.loads(text), ensure_ascii=False)
std::string roundtrip(std::string_view text) { return dump_json(parse_json(text)); }

TEST(JsonSerialize, SeparatorsAndKeyOrder) {
  EXPECT_EQ(roundtrip(R"({"location":"Paris, France"})"), R"({"location": "Paris, France"})");
  EXPECT_EQ(roundtrip(R"( {"b":1,"a":[1,2,{"z":null,"y":true}],"c":{}} )"),
            R"({"b": 1, "a": [1, 2, {"z": null, "y": true}], "c": {}})");
  EXPECT_EQ(roundtrip("[]"), "[]");
  EXPECT_EQ(roundtrip("[ ]"), "[]");
  EXPECT_EQ(roundtrip("{ }"), "{}");
  EXPECT_EQ(roundtrip("false"), "false");
  EXPECT_EQ(roundtrip("\"x\""), "\"x\"");
  EXPECT_EQ(roundtrip("[[[]],[{}]]"), "[[[]], [{}]]");
}

TEST(JsonSerialize, SortedKeysAreRecursive) {
  const JsonValue v = parse_json(R"({"b": {"y": 1, "x": 2}, "a": [{"d": 0, "c": 0}], "B": 1, "é": 0, "e": 0})");
  EXPECT_EQ(dump_json(v, {.sort_keys = true}),
            R"({"B": 1, "a": [{"c": 0, "d": 0}], "b": {"x": 2, "y": 1}, "e": 0, "é": 0})");
  EXPECT_EQ(dump_json(parse_json(R"({"reasoning_effort":"none"})"), {.sort_keys = true}),
            R"({"reasoning_effort": "none"})");
}

TEST(JsonSerialize, DuplicateKeysLastValueAtFirstPosition) {
  EXPECT_EQ(roundtrip(R"({"a": 1, "b": 2, "a": 3})"), R"({"a": 3, "b": 2})");
  EXPECT_EQ(roundtrip(R"({"a": {"x": 1}, "a": [2]})"), R"({"a": [2]})");
}

TEST(JsonSerialize, StringEscapes) {
  EXPECT_EQ(roundtrip(R"("quote \" backslash \\ slash \/ /")"), R"("quote \" backslash \\ slash / /")");
  EXPECT_EQ(roundtrip(R"("\n\r\t\b\f")"), R"("\n\r\t\b\f")");
  // Other C0 controls: \u00XX with lowercase hex.
  EXPECT_EQ(roundtrip(R"("\u0000\u0001\u001f\u001B")"), R"("\u0000\u0001\u001f\u001b")");
  // U+007F, non-ASCII, U+2028/2029 and emoji stay raw; \u escapes are decoded.
  EXPECT_EQ(roundtrip(R"("\u007f\u00e9\u2028\u2029\ud83d\ude00")"), "\"\x7f\xc3\xa9\xe2\x80\xa8\xe2\x80\xa9\xf0\x9f\x98\x80\"");
  EXPECT_EQ(roundtrip("\"caf\xc3\xa9 \xf0\x9f\x98\x80\""), "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  EXPECT_EQ(json_quote("tab\there"), R"("tab\there")");
  EXPECT_EQ(json_quote(std::string("\x01", 1)), R"("\u0001")");
}

TEST(JsonSerialize, LoneSurrogateBecomesReplacementCharacter) {
  EXPECT_EQ(roundtrip(R"("a\ud800b")"), "\"a\xef\xbf\xbd" "b\"");
  EXPECT_EQ(roundtrip(R"("\udc00")"), "\"\xef\xbf\xbd\"");
  // A high surrogate followed by a non-low escape: both kept apart.
  EXPECT_EQ(roundtrip(R"("\ud800\u0041")"), "\"\xef\xbf\xbd" "A\"");
}

TEST(JsonSerialize, IntegersKeepExactValueAndSize) {
  EXPECT_EQ(roundtrip("0"), "0");
  EXPECT_EQ(roundtrip("-0"), "0");  // Python: int('-0') == 0
  EXPECT_EQ(roundtrip("-17"), "-17");
  EXPECT_EQ(roundtrip("9223372036854775807"), "9223372036854775807");
  EXPECT_EQ(roundtrip("18446744073709551616"), "18446744073709551616");
  EXPECT_EQ(roundtrip("-123456789012345678901234567890"), "-123456789012345678901234567890");
  EXPECT_EQ(parse_json("42").as_int64(), 42);
  EXPECT_EQ(parse_json("-9223372036854775808").as_int64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parse_json("9223372036854775808").as_int64(), std::nullopt);
  EXPECT_EQ(parse_json("1.0").as_int64(), std::nullopt);
  EXPECT_THROW(parse_json(std::string(4301, '9')), InvalidRequest);
  EXPECT_EQ(roundtrip(std::string(4300, '9')), std::string(4300, '9'));
}

TEST(JsonSerialize, FloatsUsePythonRepr) {
  // Every float example of §2.7.
  EXPECT_EQ(roundtrip("1.0"), "1.0");
  EXPECT_EQ(roundtrip("0.0001"), "0.0001");
  EXPECT_EQ(roundtrip("1e2"), "100.0");
  EXPECT_EQ(roundtrip("1e-5"), "1e-05");
  EXPECT_EQ(roundtrip("1e16"), "1e+16");
  EXPECT_EQ(roundtrip("1.5e20"), "1.5e+20");
  EXPECT_EQ(roundtrip("-0.0"), "-0.0");
  EXPECT_EQ(roundtrip("1e400"), "Infinity");
  EXPECT_EQ(roundtrip("-1e400"), "-Infinity");
  EXPECT_EQ(roundtrip("9e9223372036854775807"), "Infinity");  // the exponent at INT64_MAX (found by fuzz_chat_request)
  EXPECT_EQ(roundtrip("-9e9223372036854775807"), "-Infinity");
  EXPECT_EQ(roundtrip("0.09e-9223372036854775808"), "0.0");
  EXPECT_EQ(roundtrip("[NaN, Infinity, -Infinity]"), "[NaN, Infinity, -Infinity]");
  // More CPython reprs.
  EXPECT_EQ(roundtrip("0.1"), "0.1");
  EXPECT_EQ(roundtrip("1E+2"), "100.0");
  EXPECT_EQ(roundtrip("0.00001234"), "1.234e-05");
  EXPECT_EQ(roundtrip("123456789012345678"), "123456789012345678");  // still an int
  EXPECT_EQ(roundtrip("123456789012345678.0"), "1.2345678901234568e+17");
  EXPECT_EQ(roundtrip("1234567890123456.0"), "1234567890123456.0");
  EXPECT_EQ(roundtrip("9999999999999998.0"), "9999999999999998.0");
  EXPECT_EQ(roundtrip("3.14"), "3.14");
  EXPECT_EQ(roundtrip("2.5e-3"), "0.0025");
  EXPECT_EQ(roundtrip("1e22"), "1e+22");
  EXPECT_EQ(roundtrip("5e-324"), "5e-324");
  EXPECT_EQ(roundtrip("1e-400"), "0.0");
  EXPECT_EQ(roundtrip("-1e-400"), "-0.0");
  EXPECT_EQ(roundtrip("0.000000000000000000000000000001e330"), "1e+300");
  EXPECT_EQ(roundtrip("1.7976931348623157e308"), "1.7976931348623157e+308");
  EXPECT_EQ(roundtrip("0e0"), "0.0");
  EXPECT_EQ(roundtrip("-0e5"), "-0.0");
  EXPECT_EQ(json_float_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(json_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(json_float_repr(-std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(JsonSerialize, RejectsWhatPythonRejects) {
  for (const char* bad : {"", "  ", "01", "1.", ".5", "+1", "-", "[1,]", "{\"a\":1,}", "{'a':1}", "nul", "True",
                          "-NaN", "\"unterminated", "\"tab\there\"", "[1] 2", "\"\\x\"", "\"\\u12\"", "{\"a\" 1}",
                          "[1 2]", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\""}) {
    EXPECT_THROW(parse_json(bad), InvalidRequest) << "input: " << bad;
  }
  EXPECT_THROW(parse_json(std::string(600, '[') + std::string(600, ']')), InvalidRequest);
  EXPECT_EQ(roundtrip(std::string(100, '[') + std::string(100, ']')),
            std::string(100, '[') + std::string(100, ']'));
}

TEST(JsonSerialize, ErrorNamesWhatAndWhere) {
  try {
    parse_json("{\n  \"a\": tru\n}", "messages[0].tool_calls[0].function.arguments");
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_EQ(std::string(e.what()),
              "messages[0].tool_calls[0].function.arguments is not valid JSON: Expecting value: line 2 column 8 "
              "(char 9)");
  }
}

TEST(JsonValue, BuildFindAndSet) {
  JsonValue o = JsonValue::object();
  o.set("b", JsonValue::integer(1));
  o.set("a", JsonValue::string("x"));
  o.set("b", JsonValue::floating(2.0));
  EXPECT_EQ(dump_json(o), R"({"b": 2.0, "a": "x"})");
  ASSERT_NE(o.find("a"), nullptr);
  EXPECT_EQ(o.find("a")->as_string(), "x");
  EXPECT_EQ(o.find("zz"), nullptr);
  EXPECT_STREQ(o.type_name(), "object");
  EXPECT_STREQ(JsonValue::floating(1).type_name(), "float");
}

}  // namespace
}  // namespace quatre::tokenizer
