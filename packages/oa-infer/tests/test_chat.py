import io

import pytest
import torch

from oa_core.errors import OAError
from oa_infer.chat import generation_options, load_chat, run_chat

GREEDY = generation_options(max_new_tokens=16, temperature=0, top_p=None)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tiny_llama_config, chatml_tok) -> str:
    """A random-init Llama saved with the ChatML tokenizer (as an oa run saves its model)."""
    from transformers import LlamaForCausalLM

    folder = tmp_path_factory.mktemp("chat-model")
    torch.manual_seed(3)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(chatml_tok), tie_word_embeddings=False)).save_pretrained(folder)
    chatml_tok.save_pretrained(folder)
    return str(folder)


def _chatml(*turns) -> str:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + "<|im_start|>assistant\n"


def _greedy_text(session, prompt: str, max_new_tokens: int) -> str:
    ids = session.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = session.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=max_new_tokens, eos_token_id=session.stop_ids, pad_token_id=0)
    return session.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_a_scripted_session(chat_model):
    session = load_chat(chat_model, generation=GREEDY)
    prompts, answers = [], []
    render, reply = session.prompt, session.reply
    session.prompt = lambda: prompts.append(render()) or prompts[-1]
    session.reply = lambda text, write: answers.append(reply(text, write).strip()) or answers[-1]
    script = "hello\n\n/system Be brief.\nsecond\n/reset\nthird\n/system\nfourth\n/help\n/bogus\n/exit\nnever\n"
    out = io.StringIO()

    run_chat(session, io.StringIO(script), out)

    assert prompts == [
        _chatml(("user", "hello")),
        _chatml(("system", "Be brief."), ("user", "hello"), ("assistant", answers[0]), ("user", "second")),
        _chatml(("system", "Be brief."), ("user", "third")),  # /reset forgot the turns, not the system prompt
        _chatml(("user", "third"), ("assistant", answers[2]), ("user", "fourth")),
    ]
    assert all(answers)
    transcript = out.getvalue()
    assert transcript.count("assistant> ") == 4 and "(conversation reset)" in transcript
    assert "(system prompt set)" in transcript and "(system prompt removed)" in transcript
    assert "\nuser> /reset forget the conversation, /system TEXT" in transcript
    assert "unknown command /bogus: /reset forget the conversation" in transcript
    assert session.history[-1] == {"role": "assistant", "content": answers[3]}


def test_streamed_answer_is_the_greedy_generation(chat_model):
    session = load_chat(chat_model, generation=generation_options(40, 0, None))
    pieces = []
    answer = session.reply("Tell me a story about a dragon.", pieces.append)
    assert len(pieces) > 5 and "".join(pieces) == answer
    assert answer == _greedy_text(session, _chatml(("user", "Tell me a story about a dragon.")), 40)
    assert session.history == [{"role": "user", "content": "Tell me a story about a dragon."},
                               {"role": "assistant", "content": answer.strip()}]


def test_streamed_pieces_add_up_to_the_decoded_text(llama_tok):
    """Token by token: a space after a newline is kept (transformers' TextStreamer drops it, decoding the tokens
    after a newline on their own), and an emoji split over byte tokens comes out whole."""
    from oa_infer.chat import TextSink

    ids = llama_tok("Hi!\n there 😀 café", add_special_tokens=False)["input_ids"]
    pieces = []
    sink = TextSink(llama_tok, pieces.append)
    sink.put(torch.tensor([[1, 450]]))  # the prompt: skipped
    for i in ids:
        sink.put(torch.tensor([i]))
    sink.end()
    assert pieces == ["Hi", "!", "\n", " there", " ", "😀", " c", "afé"]


def test_the_answer_stops_at_the_end_of_turn(chat_model):
    session = load_chat(chat_model, generation=GREEDY)
    assert session.stop_ids == [32001, 2]  # <|im_end|> of the template, then eos
    head = session.model.lm_head
    session.model.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        session.model.lm_head.weight.zero_()
        session.model.lm_head.bias.zero_()
        session.model.lm_head.bias[32001] = 1.0  # always <|im_end|>
    generated = []
    session.model.generate = (lambda gen: lambda **kw: generated.append(gen(**kw)) or generated[-1])(session.model.generate)
    assert session.reply("hi") == ""
    prompt_len = len(session.tokenizer(_chatml(("user", "hi")), add_special_tokens=False)["input_ids"])
    assert generated[0][0, prompt_len:].tolist() == [32001]


def test_a_turn_that_fails_is_reported_and_taken_back(chat_model):
    session = load_chat(chat_model, generation=GREEDY)
    out = io.StringIO()
    run_chat(session, io.StringIO("word " * 300 + "\nhello\n"), out)
    assert "error: the conversation is 30" in out.getvalue()
    assert "tokens, the model takes 256 (hint: /reset to start a new one)" in out.getvalue()
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["hello"]

    def interrupted(**kw):
        raise KeyboardInterrupt

    session.model.generate = interrupted  # Ctrl-C while answering
    out = io.StringIO()
    run_chat(session, io.StringIO("stop me\n"), out)
    assert out.getvalue() == "user> assistant> \n(answer stopped)\nuser> \n"
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["hello"]


def test_a_model_without_chat_template(tmp_path, tiny_llama_config, llama_tok):
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(tiny_llama_config()).save_pretrained(tmp_path / "model")
    llama_tok.save_pretrained(tmp_path / "model")
    with pytest.raises(OAError) as err:
        load_chat(str(tmp_path / "model"))
    assert str(err.value) == ("--model: the tokenizer has no chat template (hint: pass --template NAME, a registered "
                              "template (oa plugins list --kind chat_template))")
    session = load_chat(str(tmp_path / "model"), template="llama-2", generation=GREEDY)
    session.system = "Be kind."
    session.history.append({"role": "user", "content": "hi"})
    assert session.prompt() == "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nhi [/INST]"
    assert session.stop_ids == [2]
    with pytest.raises(OAError, match=r"^--template: unknown chat template 'chatm' \(did you mean 'chatml'\?\)"):
        load_chat(str(tmp_path / "model"), template="chatm")


def test_chat_with_an_adapter_folder_is_the_merged_models_chat(bases, chatml_tok, train_adapter, tmp_path):
    """The adapter folder alone (its base from adapter_config.json) and its merged model answer alike."""
    from oa_infer.merge import merge_adapter

    train_adapter(bases["untied"], tmp_path / "adapter", chatml_tok, modules_to_save=["lm_head"])
    merge_adapter(None, str(tmp_path / "adapter"), tmp_path / "merged")
    with_adapter = load_chat(str(tmp_path / "adapter"), generation=GREEDY)
    merged = load_chat(str(tmp_path / "merged"), generation=GREEDY)
    assert type(with_adapter.model).__name__.startswith("Peft") and len(with_adapter.tokenizer) == 32002
    assert with_adapter.stop_ids == merged.stop_ids == [32001, 2]
    answer = with_adapter.reply("Name three colours.")
    assert len(answer) > 3 and answer == merged.reply("Name three colours.")


def test_oa_chat_command(chat_model, monkeypatch, capsys):
    from oa_cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", "--model", chat_model, "--max-new-tokens", "6", "--temperature", "0",
                 "--system", "Be brief."]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("user> assistant> ") and captured.out.endswith("\nuser> \n")
    assert f"chat with {chat_model} (the chat template saved with its tokenizer)" in captured.err
    assert main(["chat", "--model", "./no/model"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --model: local model folder './no/model' not found (hint: check the path (a hub id looks like "
        "'org/name'))")
