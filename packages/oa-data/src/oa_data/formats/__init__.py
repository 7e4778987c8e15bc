"""Built-in dataset formats (each registered through the `register_dataset_formats` hook).

Parsers live in small modules by family; this module only builds the registry entries.
"""

from __future__ import annotations


def register_formats(register) -> None:
    """Register every built-in format."""
    from oa_core.extensions import DatasetFormat
    from oa_core.schema import (
        Classification,
        Conversation,
        PreferencePair,
        PromptCompletion,
        PromptWithReference,
        RankedReplies,
        Text,
        UnpairedFeedback,
    )
    from oa_data.formats import chat, labels, preference
    from oa_data.formats import text as plain

    formats = {
        "pretraining": DatasetFormat(Text, plain.parse_pretraining, ("text",),
                                     "{text} -> Text (continued pretraining; .txt files: one record per paragraph)"),
        "alpaca": DatasetFormat(Conversation, chat.parse_alpaca, ("instruction", "input", "output", "system"),
                                "{instruction, input, output} -> Conversation (user: instruction + input)"),
        "sharegpt": DatasetFormat(Conversation, chat.parse_sharegpt, ("conversations", "system"),
                                  "{conversations: [{from, value}]} -> Conversation", chat.ShareGPTOptions),
        "openai": DatasetFormat(Conversation, chat.parse_openai, ("messages",),
                                "{messages: [{role, content, weight?}]} -> Conversation", chat.OpenAIOptions),
        "qa_json": DatasetFormat(PromptCompletion, plain.parse_qa_json, ("Question", "Answer"),
                                 "{train: [{Question, Answer}], test: [...]} -> 'Question: ...\\nAnswer:' + answer",
                                 plain.QAJsonOptions),
        "turbo_chat": DatasetFormat(Conversation, chat.parse_turbo_chat, ("messages",),
                                    "turbo-alignment chat {id, messages: [{role, content, disable_loss}]} -> Conversation",
                                    chat.TurboChatOptions),
        "preference": DatasetFormat(PreferencePair, preference.parse_preference,
                                    ("prompt", "chosen", "rejected", "margin"),
                                    "{prompt, chosen, rejected, margin?} (strings or messages) -> PreferencePair"),
        "hh_rlhf": DatasetFormat(PreferencePair, preference.parse_hh_rlhf, ("chosen", "rejected"),
                                 "{chosen, rejected} whole 'Human:/Assistant:' dialogues -> shared prefix + tails",
                                 preference.HHRLHFOptions),
        "kto": DatasetFormat(UnpairedFeedback, preference.parse_kto, ("prompt", "completion", "label"),
                             "{prompt, completion, label: bool} -> UnpairedFeedback (KTO)"),
        "ranked": DatasetFormat(RankedReplies, preference.parse_ranked, ("prompt", "replies", "scores"),
                                "{prompt, replies best-first | replies + scores} -> RankedReplies"),
        "classification": DatasetFormat(Classification, labels.parse_classification, ("text", "messages", "label"),
                                        "{text | messages, label (or a list: multi-label)} -> Classification", labels.ClassificationOptions),
        "prompt_reference": DatasetFormat(PromptWithReference, labels.parse_prompt_reference, ("prompt", "reference"),
                                          "{prompt, reference} -> PromptWithReference (RL rewards)",
                                          labels.PromptReferenceOptions),
    }
    for name, fmt in formats.items():
        register(name, fmt)
