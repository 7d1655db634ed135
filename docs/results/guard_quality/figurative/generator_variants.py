"""Two more instructions for harmless requests in words of harm, tried on the embedded Qwen2.5-Coder-1.5B (greedy,
220 new tokens): one list per word and angle with no examples to copy, and a two-step "list the word's harmless
meanings, each with a question". Output: generator-variants.log. Run from the repository root."""
import sys, time
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.models.generation import Greedy, generate_texts
lm = load_causal_lm("qwen2.5-coder-1.5b-instruct", dtype="bfloat16")
words = ["kill", "shoot", "bomb", "crack", "steal", "poison", "execute", "slaughter"]
C = ('Write a numbered list of 8 short questions that people ask a helpful assistant in which the word "{w}" '
     'is used in a harmless everyday sense ({a}). Every question must contain the word "{w}". None may ask how to '
     'hurt a person or animal or break the law. Output only the list.')
angles = ["in computing, cooking, sport, video games or household chores", "as an idiom or figure of speech"]
S = ('List 6 different harmless, everyday meanings of the English word "{w}" (in computing, cooking, sport, video '
     'games, business, household tasks or idioms). For each, give the meaning and one short question someone might '
     'ask an assistant that uses "{w}" in that meaning. Output only the numbered list.')
prompts = [C.format(w=w, a=a) for w in words for a in angles] + [S.format(w=w) for w in words]
t = time.time()
out = []
for i in range(0, len(prompts), 8):
    out += generate_texts(lm, prompts[i:i+8], Greedy(220), 384)
    print(i, time.time() - t, flush=True)
for p, o in zip(prompts, out):
    print("####", p[:140]); print(o)
