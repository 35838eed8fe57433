"""Language a message to a borrower must never use, and the phrases it must carry.

The lexicons are deliberately strict: they flag words, not intent, because a collection message
has no legitimate need for them. A template that truly needs one of these words (a notice
written with a lawyer, say) is not a template for this service. Every lexicon applies to every
locale: the Simplified and Traditional lists overlap, and an English word in a Chinese message
is as unwelcome as in an English one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

VIOLENCE: Final = "threat of violence"
ARREST: Final = "threat of arrest, police or criminal charges"
THIRD_PARTIES: Final = "threat to contact employer, family, friends or neighbours"
SHAMING: Final = "public shaming or blacklist exposure"
IMPERSONATION: Final = "claim to be or act for a court, government or law enforcement"
EXAGGERATED_LEGAL: Final = "exaggerated legal consequence"
PRESSURE: Final = "false urgency or intimidation"
INSULT: Final = "insult"

# fmt: off
_ENGLISH: Final[dict[str, tuple[str, ...]]] = {
    VIOLENCE: (
        r"hurt (?:you|your)", r"harm (?:you|your)", r"kill", r"beat (?:you|up)", r"violen(?:ce|t)",
        r"break your \w+", r"watch your back", r"know where you live", r"you(?:'ll| will) regret",
        r"you(?:'ll| will) be sorry", r"something (?:bad|terrible) (?:will|could|might) happen",
        r"pay the price", r"face the consequences",
    ),
    ARREST: (
        r"arrest\w*", r"police", r"jail\w*", r"prison\w*", r"imprison\w*", r"criminal\w*",
        r"prosecut\w*", r"handcuff\w*", r"warrants?", r"sheriff", r"lock(?:ed)? you up",
        r"detain\w*", r"fraud\w*", r"theft",
    ),
    THIRD_PARTIES: (
        r"employers?", r"your boss", r"workplace", r"colleagues?", r"co-?workers?",
        r"neighbou?rs?", r"relatives", r"your (?:family|friends|parents|spouse|wife|husband|partner"
        r"|children|kids|references|contacts)", r"everyone you know",
    ),
    SHAMING: (
        r"black ?list\w*", r"sham(?:e|ed|ing)", r"expos(?:e|ed|ing) you", r"publish your",
        r"post (?:about )?(?:you|your)", r"social media", r"facebook", r"humiliat\w*",
        r"embarrass\w*", r"public (?:list|notice)", r"name and shame",
    ),
    IMPERSONATION: (
        r"courts?", r"judges?", r"judge?ments?", r"summons", r"subpoena\w*", r"government",
        r"federal", r"law enforcement", r"bailiff\w*", r"marshals?", r"fbi", r"irs",
        r"attorney general", r"district attorney", r"department of justice",
    ),
    EXAGGERATED_LEGAL: (
        r"lawsuits?", r"sue", r"sued", r"suing", r"litigation", r"legal action",
        r"legal proceedings", r"attorneys?", r"lawyers?", r"seiz(?:e|ed|ure)", r"garnish\w*",
        r"repossess\w*", r"foreclos\w*", r"confiscat\w*", r"freeze your", r"deport\w*",
        r"immigration", r"lose your (?:job|home|house|car|children|kids)",
        r"(?:ruin|destroy)\w* your credit", r"permanent(?:ly)?",
    ),
    PRESSURE: (r"last chance", r"final warning", r"ultimatum"),
    INSULT: (
        r"deadbeat", r"loser", r"scum", r"liar", r"thief", r"cheat(?:er)?", r"worthless",
        r"stupid", r"idiot", r"shameless", r"irresponsible",
    ),
}

# Simplified (zh-CN) and Traditional (zh-TW) forms, matched as plain substrings.
_CHINESE: Final[dict[str, tuple[str, ...]]] = {
    VIOLENCE: (
        "暴力", "打死", "弄死", "砍死", "杀了你", "殺了你", "揍你", "收拾你", "修理你",
        "让你好看", "給你好看", "走着瞧", "走著瞧", "小心点", "小心點", "后果自负", "後果自負",
        "人身安全", "泼油漆", "潑漆", "讨债公司", "討債集團",
    ),
    ARREST: (
        "逮捕", "拘留", "拘捕", "羁押", "羈押", "坐牢", "入狱", "入獄", "监狱", "監獄", "报警",
        "報警", "警察", "警方", "警局", "公安", "派出所", "刑事", "刑拘", "判刑", "通缉", "通緝",
        "诈骗", "詐騙", "詐欺", "犯罪",
    ),
    THIRD_PARTIES: (
        "单位", "單位", "领导", "雇主", "老闆", "老板", "主管", "同事", "家人", "家属", "家屬",
        "亲属", "親屬", "亲戚", "親戚", "父母", "配偶", "老公", "老婆", "子女", "孩子", "小孩",
        "朋友", "亲友", "親友", "邻居", "鄰居", "通讯录", "通訊錄", "紧急联系人", "緊急聯絡人",
        "学校", "學校", "村委", "居委会", "里長",
    ),
    SHAMING: (
        "曝光", "黑名单", "黑名單", "失信", "老赖", "老賴", "公示", "公告", "公开您", "公開您",
        "朋友圈", "脸书", "臉書", "张贴", "張貼", "大字报", "社死", "社会性死亡", "丢人",
        "丟臉", "游街",
    ),
    IMPERSONATION: (
        "法院", "法官", "传票", "傳票", "检察", "檢察", "地检署", "地檢署", "公安局",
        "政府", "执法", "執法", "司法机关", "司法機關", "执行处", "執行處", "行政執行署",
    ),
    EXAGGERATED_LEGAL: (
        "起诉", "起訴", "诉讼", "訴訟", "律师", "律師", "强制执行", "強制執行", "冻结", "凍結",
        "查封", "扣押", "拍卖", "拍賣", "没收", "沒收", "扣薪", "支付命令", "本票裁定",
        "限制高消费", "限高", "限制出行", "限制出境", "影响子女", "影響子女", "永久",
        "法律责任", "法律責任", "刑事责任", "刑事責任", "征信黑",
    ),
    PRESSURE: ("最后机会", "最後機會", "最后警告", "最後警告", "最后通牒", "最後通牒"),
    INSULT: (
        "骗子", "騙子", "无赖", "無賴", "老赖", "老賴", "不要脸", "不要臉", "废物", "廢物",
        "人渣", "垃圾人",
    ),
}
# fmt: on


@dataclass(frozen=True, slots=True)
class ForbiddenHit:
    category: str
    phrase: str
    column: int


def _compile() -> list[tuple[str, re.Pattern[str]]]:
    compiled = []
    for category, patterns in _ENGLISH.items():
        joined = "|".join(patterns)
        compiled.append((category, re.compile(rf"(?<![\w-])(?:{joined})(?![\w-])", re.IGNORECASE)))
    for category, phrases in _CHINESE.items():
        joined = "|".join(re.escape(phrase) for phrase in phrases)
        compiled.append((category, re.compile(joined)))
    return compiled


_PATTERNS: Final = _compile()


def forbidden_language(text: str) -> list[ForbiddenHit]:
    """Every forbidden phrase in `text`, in order of appearance."""
    hits = [
        ForbiddenHit(category, match.group(0), match.start())
        for category, pattern in _PATTERNS
        for match in pattern.finditer(text)
    ]
    return sorted(hits, key=lambda hit: hit.column)


# The SMS opt-out instruction per locale; the inbound handler understands each of these words.
SMS_OPT_OUT: Final[dict[str, str]] = {
    "en-US": "Reply STOP to opt out",
    "zh-CN": "回复TD退订",
    "zh-TW": "回覆TD退訂",
}


def sms_opt_out_phrases(locale: str) -> tuple[str, ...]:
    """What counts as the opt-out instruction in `locale` (any known one for other locales)."""
    if locale in SMS_OPT_OUT:
        return (SMS_OPT_OUT[locale],)
    return tuple(SMS_OPT_OUT.values())
