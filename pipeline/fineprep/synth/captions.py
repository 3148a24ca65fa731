"""MAFW-style captions: a context sentence, then a sentence of facial action cues (English + Chinese).

Neutral clips get no caption, as in MAFW. Every Chinese string must encode as GBK, the encoding of
MAFW's with_caption split files.
"""

from __future__ import annotations

import numpy as np

CONTEXTS = (
    ("{who} talks to someone off camera.", "{zh}对着镜头外的人说话。"),
    ("{who} listens to a question in a small room.", "{zh}在一个小房间里听别人提问。"),
    ("{who} reacts to news on a phone call.", "{zh}在电话里听到一个消息。"),
    ("{who} looks at something in front of {obj}.", "{zh}看着面前的东西。"),
    ("{who} sits still while the others argue.", "{zh}在别人争吵时静静地坐着。"),
)

CUES: dict[str, tuple[tuple[str, str], ...]] = {
    "happiness": (("The corners of the mouth rise and the cheeks lift.", "嘴角上扬，脸颊抬起。"),
                  ("A broad smile spreads and the lower lids tighten.", "露出灿烂的笑容，下眼睑收紧。")),
    "surprise": (("The jaw drops, the brows shoot up and the eyes widen.", "下巴张开，眉毛上扬，眼睛睁大。"),
                 ("The mouth falls open under raised brows.", "嘴巴张大，眉毛高高抬起。")),
    "sadness": (("The inner brows rise and the mouth corners turn down.", "眉头内侧上扬，嘴角下垂。"),
                ("The lip corners sink and the chin pushes up slightly.", "嘴角下拉，下巴微微上推。")),
    "anger": (("The brows pull down and together and the lids tighten.", "眉头紧锁下压，眼睑收紧。"),
              ("The deep frown and a tight mouth.", "眉头紧蹙，嘴唇紧闭。")),
    "disgust": (("The upper lip lifts and the nose wings rise.", "上唇上提，鼻翼抬起。"),
                ("A raised upper lip and slightly lowered inner brows.", "上唇抬起，眉头微微下压。")),
    "fear": (("The brows rise and draw together while the mouth stretches wide.", "眉毛上扬并向中间聚拢，嘴巴向两侧拉开。"),
             ("Wide eyes under raised brows and a tense, stretched mouth.", "眉毛抬起，眼睛睁大，嘴角紧张地拉开。")),
    "contempt": (("One corner of the mouth rises on one side only.", "一侧嘴角微微上扬。"),
                 ("A one-sided tightening of the lip corner.", "单侧嘴角收紧上提。")),
    "anxiety": (("The inner brows lift and the lips press together.", "眉头内侧抬起，双唇紧抿。"),
                ("Raised inner brows and a pressed, uneasy mouth.", "眉头上扬，嘴唇不安地抿着。")),
    "helplessness": (("The brows rise while the mouth corners drop.", "眉毛上扬，嘴角下垂。"),
                     ("Raised brows and a slack, downturned mouth.", "眉毛抬起，嘴巴松弛下垂。")),
    "disappointment": (("The mouth corners fall and the eyelids lower.", "嘴角下垂，眼皮低垂。"),
                       ("Drooping lids and a downturned mouth.", "眼睑下垂，嘴角向下。")),
}


def caption(label: str, woman: bool, rng: np.random.Generator) -> tuple[str, str] | None:
    """(Chinese, English) caption for a single label, or None for neutral (MAFW gives it none)."""
    if label == "neutral":
        return None
    if label not in CUES:
        raise KeyError(f"no caption cues for class {label!r}")
    who, obj, zh_who = ("A woman", "her", "一个女人") if woman else ("A person", "them", "一个人")
    ctx_en, ctx_zh = CONTEXTS[int(rng.integers(len(CONTEXTS)))]
    cue_en, cue_zh = CUES[label][int(rng.integers(len(CUES[label])))]
    return ctx_zh.format(zh=zh_who) + cue_zh, ctx_en.format(who=who, obj=obj) + " " + cue_en
