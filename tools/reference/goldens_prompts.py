"""The golden prompts for make_goldens.py: their names and lengths, the 64-bit LCG that draws their ids
(PROMPT_GENERATOR_DOC, recomputable in C++), and which logits rows a file stores (LOGIT_ROWS_DOC)."""

BOS_ID = 1
ID_LOW = 1000  # random prompt ids are drawn from [ID_LOW, vocab_size)
# (name, number of pseudo-random ids after BOS). The first prompt also gets hidden states and per-step decode logits.
PROMPTS = (("p13", 12), ("p6", 5), ("p200", 199))
SHORT_PROMPT_MAX = 32  # prompts up to this length store all logits rows and get a greedy continuation

LCG_A = 6364136223846793005
LCG_C = 1442695040888963407
MASK64 = (1 << 64) - 1

PROMPT_GENERATOR_DOC = (
    "ids[0]=BOS=1; state=T (the prompt length, e.g. 13 for p13); for j in 1..T-1: "
    "state=(6364136223846793005*state+1442695040888963407) mod 2^64; ids[j]=1000+((state>>33) mod (vocab-1000))"
)
LOGIT_ROWS_DOC = "T<=32: every row; otherwise rows 0,8,16,... (<T) plus the last 4 rows, ascending, no duplicates"


def prompt_ids(n_random, vocab_size):
    """BOS followed by n_random pseudo-random ids in [ID_LOW, vocab_size) (PROMPT_GENERATOR_DOC)."""
    if vocab_size <= ID_LOW:
        raise ValueError(f"vocab_size {vocab_size} must exceed {ID_LOW}")
    state = n_random + 1
    ids = [BOS_ID]
    for _ in range(n_random):
        state = (LCG_A * state + LCG_C) & MASK64
        ids.append(ID_LOW + ((state >> 33) % (vocab_size - ID_LOW)))
    return ids


def logit_rows(t):
    if t <= SHORT_PROMPT_MAX:
        return list(range(t))
    return sorted(set(range(0, t, 8)) | set(range(max(0, t - 4), t)))
