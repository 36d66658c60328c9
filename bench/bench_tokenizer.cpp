// Tekken encode/decode throughput (MB/s of UTF-8 input, tokens/s), single thread, on the English-like text and
// the tokenizer corpus that the test build generates (scripts/make_tokenizer_corpus.py). The tiktoken figure on
// the same inputs comes from tools/reference/tiktoken_bench.py. Not part of CTest.
//   bench_tokenizer [--check] [--data-dir DIR] [benchmark flags]
// --check first verifies the public ground truth and decode(encode(x)) == x on the inputs, and stops on failure.
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tekken.h"

namespace {

using quatre::tokenizer::Tekken;
using quatre::tokenizer::TokenId;

struct Inputs {
  std::optional<Tekken> tekken;
  std::string english;
  std::vector<std::string> corpus;  // raw corpus strings (text, or hex-decoded bytes)
  size_t corpus_bytes = 0;
};

Inputs& inputs() {
  static Inputs in;
  return in;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(fmt::format("cannot open {} (build the tokenizer_test_data target)", path.string()));
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void load_inputs(const std::filesystem::path& dir) {
  Inputs& in = inputs();
  in.tekken.emplace(Tekken::load(dir / "tekken.json"));
  in.english = read_file(dir / "english.txt");
  std::istringstream lines(read_file(dir / "corpus.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    std::string bytes;
    if (j.contains("hex")) {
      const auto& hex = j["hex"].get_ref<const std::string&>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    } else {
      bytes = j["text"].get<std::string>();
    }
    in.corpus_bytes += bytes.size();
    in.corpus.push_back(std::move(bytes));
  }
}

bool check(const Inputs& in) {
  const Tekken& t = *in.tekken;
  bool is_ok = t.encode("Hello, how are you?") == std::vector<TokenId>{22177, 1044, 2606, 1584, 1636, 1063} &&
               t.encode("Plz tekkenize me") == std::vector<TokenId>{4444, 1122, 16058, 3569, 2033, 1639};
  if (!is_ok) fmt::print(stderr, "check: the public ground truth does not encode as expected\n");
  if (t.decode(t.encode(in.english)) != in.english) {
    fmt::print(stderr, "check: decode(encode(english)) differs from the text\n");
    is_ok = false;
  }
  for (const std::string& s : in.corpus) {
    const std::string back = t.decode(t.encode(s));
    if (back != s && back.find("\xEF\xBF\xBD") == std::string::npos) {  // invalid UTF-8 comes back replaced
      fmt::print(stderr, "check: decode(encode(x)) != x for a corpus string of {} bytes\n", s.size());
      is_ok = false;
      break;
    }
  }
  fmt::print("check: {}\n", is_ok ? "ok" : "FAILED");
  return is_ok;
}

void set_rates(benchmark::State& state, size_t n_bytes, size_t n_tokens) {
  const auto n_iterations = static_cast<double>(state.iterations());
  state.counters["MB"] = benchmark::Counter(static_cast<double>(n_bytes) * n_iterations / 1e6,
                                              benchmark::Counter::kIsRate);
  state.counters["tokens"] = benchmark::Counter(static_cast<double>(n_tokens) * n_iterations,
                                                  benchmark::Counter::kIsRate);
}

void BM_EncodeEnglish(benchmark::State& state) {
  const Inputs& in = inputs();
  size_t n_tokens = 0;
  for (auto _ : state) {
    const auto ids = in.tekken->encode(in.english);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  set_rates(state, in.english.size(), n_tokens);
}
BENCHMARK(BM_EncodeEnglish)->Unit(benchmark::kMillisecond);

void BM_EncodeCorpusPerString(benchmark::State& state) {
  const Inputs& in = inputs();
  size_t n_tokens = 0;
  std::vector<TokenId> ids;
  for (auto _ : state) {
    n_tokens = 0;
    for (const std::string& s : in.corpus) {
      ids.clear();
      in.tekken->encode_into(s, ids);
      n_tokens += ids.size();
    }
    benchmark::DoNotOptimize(ids.data());
  }
  set_rates(state, in.corpus_bytes, n_tokens);
}
BENCHMARK(BM_EncodeCorpusPerString)->Unit(benchmark::kMillisecond);

void BM_DecodeEnglish(benchmark::State& state) {
  const Inputs& in = inputs();
  const auto ids = in.tekken->encode(in.english);
  for (auto _ : state) benchmark::DoNotOptimize(in.tekken->decode(ids).size());
  set_rates(state, in.english.size(), ids.size());
}
BENCHMARK(BM_DecodeEnglish)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  bool is_check = false;
  std::filesystem::path data_dir = std::filesystem::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data";
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) {
      is_check = true;
    } else if (std::strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
      data_dir = argv[++i];
    } else {
      rest.push_back(argv[i]);
    }
  }
  try {
    load_inputs(data_dir);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_tokenizer: {}\n", e.what());
    return 1;
  }
  if (is_check && !check(inputs())) return 1;
  int n_args = static_cast<int>(rest.size());
  benchmark::Initialize(&n_args, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n_args, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
