"""Text to train and test tokenizers and tiny language models on, with no download.

Nothing in this course reaches a dataset hub, so the text comes from three
places, all of them offline:

- ``generate_corpus`` makes English and Chinese text from a small hand-written
  grammar. Words are drawn with a Zipf-like law (the r-th most common word of a
  list is drawn about ``1 / r`` as often as the first), so, as in real text, a
  few words are very frequent and most are rare. Byte-pair encoding learns its
  merges from exactly this frequency structure; uniformly random words would
  teach it nothing. The same seed gives the same text on every machine and every
  Python version: the only source of randomness is ``random.Random(seed).random``,
  and no step depends on hash or dictionary order.
- ``stdlib_corpus`` collects the docstrings of Python's standard library: real
  English prose written by people, present wherever Python is.
- ``load_text`` reads a UTF-8 file of your own and explains what went wrong when
  it cannot.

Example::

    >>> from llmcourse.course.corpus import generate_corpus
    >>> text = generate_corpus(1_000, seed=0)
    >>> len(text)
    1000
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from bisect import bisect
from collections.abc import Callable
from pathlib import Path
from random import Random

__all__ = ["generate_corpus", "stdlib_corpus", "load_text"]

# --- Constants ---------------------------------------------------------------

# Exponent s of the Zipf law: the word of rank r is drawn with weight 1 / r**s.
# Natural language sits close to s = 1, and with s = 1 every weight is a plain
# reciprocal, computed identically by every platform's floating point.
ZIPF_EXPONENT = 1.0

# A paragraph is filled with sentences until it holds at least this many
# characters, drawn uniformly between the two bounds. English and Chinese use
# the same bounds, so `chinese_fraction` is (on average) the share of the
# characters that belong to Chinese paragraphs.
PARAGRAPH_MIN_CHARS = 200
PARAGRAPH_MAX_CHARS = 900

# Paragraphs are separated by one blank line, as in most plain-text files.
PARAGRAPH_SEPARATOR = "\n\n"

# Sentences of an English paragraph are separated by one space; Chinese
# sentences follow each other with no space at all.
ENGLISH_SENTENCE_SEPARATOR = " "
CHINESE_SENTENCE_SEPARATOR = ""

# Ranges of the numbers written with digits: years, counts, prices, percents.
YEAR_RANGE = (1900, 2025)
COUNT_RANGE = (2, 99)
PRICE_RANGE = (1, 500)
PERCENT_RANGE = (1, 99)
HOUR_RANGE = (1, 12)
MINUTE_CHOICES = ("00", "05", "10", "15", "20", "30", "40", "45", "50")


# --- Sampling: everything goes through `rng.random()` ------------------------
#
# `random.Random` methods such as `choice` or `randrange` are stable today, but
# drawing every choice from `random()` with our own arithmetic makes the
# stream of choices independent of how any Python version implements them.

def _zipf_cumulative_weights(n: int) -> list[float]:
    """Cumulative Zipf weights for ranks 1..n (rank 1 is the most frequent)."""
    total, cumulative = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**ZIPF_EXPONENT
        cumulative.append(total)
    return cumulative


def _cumulative(weights: list[float]) -> list[float]:
    total, cumulative = 0.0, []
    for weight in weights:
        total += weight
        cumulative.append(total)
    return cumulative


def _uniform_int(random: Callable[[], float], low: int, high: int) -> int:
    """An integer in [low, high], both ends included."""
    return low + int(random() * (high - low + 1))


class _Words:
    """A terminal symbol: one word drawn from a list ranked by frequency."""

    __slots__ = ("words", "cumulative", "total")

    def __init__(self, words: list[str]):
        self.words = words
        self.cumulative = _zipf_cumulative_weights(len(words))
        self.total = self.cumulative[-1]

    def pick(self, random: Callable[[], float]) -> str:
        index = bisect(self.cumulative, random() * self.total)
        return self.words[min(index, len(self.words) - 1)]

    def expand(self, random: Callable[[], float], out: list[str]) -> None:
        out.append(self.pick(random))


class _Generated:
    """A terminal symbol made by a function, such as a year or a price."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[Callable[[], float]], str]):
        self.make = make

    def expand(self, random: Callable[[], float], out: list[str]) -> None:
        out.append(self.make(random))


class _Rule:
    """A non-terminal symbol: one of several weighted expansions.

    An expansion is a template such as ``"{subject} {verb_past} {object}."``:
    text outside braces is copied, each ``{name}`` is expanded in turn.
    """

    __slots__ = ("alternatives", "cumulative", "total")

    def __init__(self) -> None:
        self.alternatives: list[list[object]] = []
        self.cumulative: list[float] = []
        self.total = 0.0

    def expand(self, random: Callable[[], float], out: list[str]) -> None:
        index = bisect(self.cumulative, random() * self.total)
        for part in self.alternatives[min(index, len(self.alternatives) - 1)]:
            if part.__class__ is str:
                out.append(part)
            else:
                part.expand(random, out)


_SLOT = re.compile(r"\{(\w+)\}")


def _compile_grammar(
    rules: dict[str, list[tuple[float, str]]],
    words: dict[str, list[str]],
    generated: dict[str, Callable[[Callable[[], float]], str]],
) -> dict[str, object]:
    """Turn template strings into linked symbol objects, checking every name."""
    symbols: dict[str, object] = {}
    for name, word_list in words.items():
        symbols[name] = _Words(word_list)
    for name, make in generated.items():
        symbols[name] = _Generated(make)
    for name in rules:
        symbols[name] = _Rule()
    for name, alternatives in rules.items():
        rule = symbols[name]
        for _, template in alternatives:
            parts: list[object] = []
            for i, piece in enumerate(_SLOT.split(template)):
                if i % 2 == 0:
                    if piece:
                        parts.append(piece)
                elif piece in symbols:
                    parts.append(symbols[piece])
                else:
                    raise KeyError(f"grammar rule {name!r} uses unknown symbol {{{piece}}}")
            rule.alternatives.append(parts)
        rule.cumulative = _cumulative([weight for weight, _ in alternatives])
        rule.total = rule.cumulative[-1]
    return symbols


# --- English -----------------------------------------------------------------
# Every list is ordered from the most to the least common word, because the
# rank in the list sets how often a word is drawn.

_NAMES = """
Anna Tom Maria John Lena Sam David Sara Peter Emma Leo Nina Omar Yuki Ravi
Clara Felix Hugo Ines Jonas Kofi Lucia Mei Noah Olga Pablo Rosa Tariq Vera Wen
Zoe Ben Chloe Dmitri Elena Farah Grace Hana Ivan Jack Kim Liam Maya Nils Oscar
Priya Quinn Rafael Sofia Theo Uma Victor Will Amara Yusuf Bruno Celia Dario
""".split()

# Town names and surnames are built from parts, so that, as in real text, there
# is a long tail of rare words that share pieces ("Ashford", "Ashwick", "Oakford").
_TOWN_PARTS = _Words("""
Mill East Stone River Ash Green Oak Fair North West King Lake Red Silver Bright
Elm High Copper Sand Thorn Black Wood Glen Marsh Hazel Wolf Fox Cold Long Ember
""".split())
_TOWN_ENDINGS = _Words("""
ton ford field bridge wood hill mere view gate port side cliff water stead moor
bury wick ham
""".split())
_SURNAME_SYLLABLES = _Words("""
ma ri lo sen da ve kor al ten bru mi na sol fer ga hol tan el quin ro bel dor vas
ka ner lin tor es wen pa
""".split())

# Share of surnames with two syllables; the others have three.
TWO_SYLLABLE_SURNAME_SHARE = 0.7

_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "knife": "knives",
    "leaf": "leaves", "mouse": "mice", "sheep": "sheep", "fish": "fish",
    "potato": "potatoes", "tomato": "tomatoes", "bread": "bread", "coffee": "coffee",
}


def _plural(noun: str) -> str:
    """English plural of the nouns used here (not of every English noun)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


# People who can do things: subjects of sentences.
_PERSON_NOUNS = """
teacher friend man woman child doctor farmer student neighbour driver boy girl
king baker nurse sailor captain painter singer writer pilot soldier artist
player stranger guest visitor cook
""".split()

# Things that are seen, carried, bought and lost: objects of sentences.
_THING_NOUNS = """
book letter key box car door table bag map cup chair window phone house picture
ticket bottle basket apple bread coffee clock lamp hat coat shirt shoe ring boat
bike camera knife glass dish watch pencil notebook blanket mirror candle
painting song story plan idea problem question answer secret promise potato
tomato flower seed stone leaf fish horse dog cat bird fox sheep mouse bus train
ship machine computer engine wheel hammer paper radio umbrella wallet tree
""".split()

_PLACES = """
park market river station library kitchen garden village harbour forest office
school museum bakery bridge square church hospital hill beach lake field farm
castle cafe shop hotel theatre valley tower mill island cellar attic
""".split()

_ADJECTIVES = """
good new old small big long great little young large important bad different
early late hard easy strong quiet dark bright warm cold happy sad green red blue
white black yellow clean heavy empty full strange simple beautiful tired busy
careful famous hungry narrow wide sharp soft loud rich poor brave clever curious
gentle honest lazy lucky modern ancient noisy proud rare rough secret smooth
sudden tiny wild wooden wet dry fresh round broken golden silver friendly
difficult open useful
""".split()

# (base, third person singular, past) for verbs that take an object.
_TRANSITIVE_VERBS = [
    ("see", "sees", "saw"), ("make", "makes", "made"), ("take", "takes", "took"),
    ("find", "finds", "found"), ("give", "gives", "gave"), ("want", "wants", "wanted"),
    ("use", "uses", "used"), ("need", "needs", "needed"), ("like", "likes", "liked"),
    ("open", "opens", "opened"), ("carry", "carries", "carried"),
    ("build", "builds", "built"), ("buy", "buys", "bought"),
    ("bring", "brings", "brought"), ("hold", "holds", "held"), ("read", "reads", "read"),
    ("write", "writes", "wrote"), ("sell", "sells", "sold"),
    ("watch", "watches", "watched"), ("follow", "follows", "followed"),
    ("paint", "paints", "painted"), ("fix", "fixes", "fixed"),
    ("clean", "cleans", "cleaned"), ("move", "moves", "moved"),
    ("lose", "loses", "lost"), ("keep", "keeps", "kept"), ("leave", "leaves", "left"),
    ("help", "helps", "helped"), ("call", "calls", "called"),
    ("visit", "visits", "visited"), ("cook", "cooks", "cooked"),
    ("wash", "washes", "washed"), ("push", "pushes", "pushed"),
    ("pull", "pulls", "pulled"), ("drop", "drops", "dropped"),
    ("catch", "catches", "caught"), ("forget", "forgets", "forgot"),
    ("remember", "remembers", "remembered"), ("describe", "describes", "described"),
    ("borrow", "borrows", "borrowed"), ("send", "sends", "sent"),
    ("study", "studies", "studied"), ("check", "checks", "checked"),
    ("count", "counts", "counted"), ("draw", "draws", "drew"), ("hide", "hides", "hid"),
    ("close", "closes", "closed"), ("fill", "fills", "filled"),
    ("miss", "misses", "missed"), ("share", "shares", "shared"),
    ("measure", "measures", "measured"), ("plant", "plants", "planted"),
    ("steal", "steals", "stole"), ("choose", "chooses", "chose"),
    ("throw", "throws", "threw"), ("break", "breaks", "broke"),
    ("wear", "wears", "wore"), ("feed", "feeds", "fed"), ("mend", "mends", "mended"),
    ("weigh", "weighs", "weighed"), ("polish", "polishes", "polished"),
]

# (base, past) for verbs without an object.
_INTRANSITIVE_VERBS = [
    ("go", "went"), ("come", "came"), ("run", "ran"), ("walk", "walked"),
    ("sleep", "slept"), ("laugh", "laughed"), ("smile", "smiled"), ("wait", "waited"),
    ("stay", "stayed"), ("arrive", "arrived"), ("work", "worked"), ("sing", "sang"),
    ("dance", "danced"), ("swim", "swam"), ("rest", "rested"), ("cry", "cried"),
    ("fall", "fell"), ("grow", "grew"), ("travel", "travelled"),
    ("listen", "listened"), ("return", "returned"), ("disappear", "disappeared"),
    ("agree", "agreed"), ("shout", "shouted"), ("jump", "jumped"), ("sit", "sat"),
    ("stand", "stood"), ("wake", "woke"), ("whisper", "whispered"), ("hurry", "hurried"),
]

_ADVERBS = """
quickly slowly quietly carefully suddenly finally happily loudly gently
proudly badly easily softly politely angrily calmly eagerly nervously
patiently silently
""".split()

_TIMES = """
yesterday|today|this morning|last week|in the evening|every day|at night|
on Monday|after lunch|last year|in the spring|on Sunday|this afternoon|
before dinner|on Friday|in the winter|last night|every morning|in the summer|
on Tuesday|at noon|in the autumn|on Saturday|at dawn
""".replace("\n", "").split("|")

_FREQUENCY_ADVERBS = """
every day|on Sundays|in the morning|twice a week|at night|every year|after school|
on weekdays|once a month
""".replace("\n", "").split("|")

_PREPOSITIONS = """
in|near|behind|under|next to|outside|inside|across|around|beside|above|through|
along|opposite
""".replace("\n", "").split("|")

_NUMBER_WORDS = "two three four five six seven ten twelve twenty a hundred".split()

_WH_WORDS = "why where when how what who".split()


def _year(random: Callable[[], float]) -> str:
    return str(_uniform_int(random, *YEAR_RANGE))


def _count(random: Callable[[], float]) -> str:
    return str(_uniform_int(random, *COUNT_RANGE))


def _price(random: Callable[[], float]) -> str:
    return "$" + str(_uniform_int(random, *PRICE_RANGE))


def _percent(random: Callable[[], float]) -> str:
    return str(_uniform_int(random, *PERCENT_RANGE)) + "%"


def _town(random: Callable[[], float]) -> str:
    return _TOWN_PARTS.pick(random) + _TOWN_ENDINGS.pick(random)


def _surname(random: Callable[[], float]) -> str:
    syllables = 2 if random() < TWO_SYLLABLE_SURNAME_SHARE else 3
    return "".join(_SURNAME_SYLLABLES.pick(random) for _ in range(syllables)).capitalize()


def _clock(random: Callable[[], float]) -> str:
    hour = _uniform_int(random, *HOUR_RANGE)
    minute = MINUTE_CHOICES[int(random() * len(MINUTE_CHOICES))]
    return f"{hour}:{minute}"


_ENGLISH_WORDS = {
    "name": _NAMES,
    "person": _PERSON_NOUNS,
    "people": [_plural(noun) for noun in _PERSON_NOUNS],
    "noun": _THING_NOUNS,
    "nouns": [_plural(noun) for noun in _THING_NOUNS],
    "place": _PLACES,
    "adj": _ADJECTIVES,
    "vt": [base for base, _, _ in _TRANSITIVE_VERBS],
    "vt_s": [third for _, third, _ in _TRANSITIVE_VERBS],
    "vt_past": [past for _, _, past in _TRANSITIVE_VERBS],
    "vi": [base for base, _ in _INTRANSITIVE_VERBS],
    "vi_past": [past for _, past in _INTRANSITIVE_VERBS],
    "adv": _ADVERBS,
    "time": _TIMES,
    "often": _FREQUENCY_ADVERBS,
    "prep": _PREPOSITIONS,
    "number": _NUMBER_WORDS,
    "wh": _WH_WORDS,
}

_ENGLISH_GENERATED = {
    "town": _town, "surname": _surname,
    "year": _year, "count": _count, "price": _price, "percent": _percent, "clock": _clock,
}

# Weighted alternatives for each non-terminal. "sentence" is the start symbol.
_ENGLISH_RULES: dict[str, list[tuple[float, str]]] = {
    "sentence": [
        (10, "{subject} {vt_past} {object} {where}."),
        (8, "{subject} {vt_past} {object}."),
        (6, "{subject} {vi_past} {where} {time}."),
        (5, "{time}, {subject} {vt_past} {object}."),
        (5, "{thing} was {adj}."),
        (4, "{someone} {vt_s} {object} {often}."),
        (4, "{subject} didn't {vt} {object}."),
        (3, "{subject} can't {vt} {object} {time}."),
        (3, "{plural_subject} don't {vt} {plural_object}."),
        (3, "It's {adj} {where}."),
        (2, "That's {object}, isn't it?"),
        (6, '"{speech}," said {someone}.'),
        (3, '"{speech}," {name} said {adv}.'),
        (3, '{name} asked, "{question}"'),
        (3, "{question}"),
        (3, "{subject} {vt_past} {number} {nouns} {where}."),
        (2, "{subject} {vt_past} {count} {nouns} {where}."),
        (2, "In {year}, {someone} {vt_past} {object}."),
        (2, "{name} paid {price} for {object}."),
        (1, "About {percent} of the {people} in {town} are {adj}."),
        (2, "The train to {town} left at {clock}."),
        (4, "{clause}, but {clause}."),
        (3, "{clause} because {clause}."),
        (3, "When {clause}, {clause}."),
        (2, "{subject} {vi_past} {adv}, and {clause}."),
    ],
    "clause": [
        (4, "{subject} {vt_past} {object}"),
        (3, "{subject} {vi_past} {adv}"),
        (3, "{thing} was {adj}"),
        (1, "{subject} didn't {vi}"),
    ],
    "someone": [
        (6, "{name}"), (4, "the {person}"), (2, "the {adj} {person}"),
        (1, "{name}'s {person}"), (1, "{name} {surname}"), (1, "Dr {surname}"),
        (1, "the {person} from {town}"),
    ],
    "subject": [
        (10, "{someone}"), (2, "he"), (2, "she"), (2, "they"), (1, "we"), (1, "I"),
    ],
    "plural_subject": [(3, "they"), (2, "we"), (2, "I"), (1, "you"), (2, "the {people}")],
    "thing": [
        (8, "the {noun}"), (4, "the {adj} {noun}"), (2, "{name}'s {noun}"),
        (1, "her {noun}"), (1, "his {noun}"), (1, "our {noun}"),
    ],
    "object": [
        (8, "the {noun}"), (5, "a {noun}"), (4, "the {adj} {noun}"),
        (4, "a {adj} {noun}"), (2, "{name}'s {noun}"), (1, "his {noun}"),
        (1, "her {noun}"), (1, "their {nouns}"), (2, "the {nouns}"),
        (1, "some {nouns}"), (1, "{number} {nouns}"), (2, "{name}"),
        (1, "the {person}"), (1, "it"),
    ],
    "plural_object": [(3, "the {nouns}"), (2, "{adj} {nouns}"), (1, "their {nouns}")],
    "where": [
        (6, "{prep} the {place}"), (2, "{prep} the {adj} {place}"),
        (2, "in {town}"), (1, "{prep} {name}'s {place}"),
    ],
    "speech": [
        (3, "We can't {vt} {object} {time}"), (3, "I don't know {wh} {subject} {vi_past}"),
        (3, "It's {adj} {where}"), (2, "Let's {vt} {object}"), (2, "You're {adj}"),
        (2, "There's {object} {where}"), (2, "I'll {vt} {object} {time}"),
        (1, "They've {vt_past} {object}"), (1, "She isn't {adj}"),
        (1, "He won't {vi}"), (1, "I'm {adj}"),
    ],
    "question": [
        (3, "Did {name} {vt} {object}?"), (2, "Why is {thing} so {adj}?"),
        (2, "Where did {subject} {vi}?"), (2, "Is {thing} {adj}?"),
        (1, "How many {nouns} did {name} {vt}?"), (1, "Who {vt_past} {object}?"),
        (1, "What time does the {place} open?"),
    ],
}

_ENGLISH = _compile_grammar(_ENGLISH_RULES, _ENGLISH_WORDS, _ENGLISH_GENERATED)

# "a apple" -> "an apple". The word lists avoid words like "hour" or
# "university" whose spelling misleads this rule.
_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


# --- Chinese -----------------------------------------------------------------

_ZH_PEOPLE = """
小明 小红 李华 王芳 张伟 刘洋 陈静 杨帆 赵磊 老王 老师 妈妈 爸爸 奶奶 爷爷
哥哥 姐姐 弟弟 妹妹 医生 同学 朋友们 孩子们 经理 邻居 小李 周老师 孙阿姨
""".split()

_ZH_PRONOUNS = "我 他 她 我们 他们 你 大家 你们".split()

# (classifier, noun): Chinese counts things with a measure word in between.
_ZH_COUNTED_NOUNS = [
    ("本", "书"), ("个", "苹果"), ("台", "电脑"), ("杯", "茶"), ("张", "桌子"),
    ("辆", "车"), ("条", "鱼"), ("只", "猫"), ("件", "衣服"), ("个", "故事"),
    ("把", "椅子"), ("封", "信"), ("首", "歌"), ("杯", "咖啡"), ("张", "照片"),
    ("辆", "自行车"), ("条", "狗"), ("只", "鸟"), ("把", "伞"), ("双", "鞋"),
    ("棵", "树"), ("朵", "花"), ("块", "蛋糕"), ("份", "报纸"), ("篇", "文章"),
    ("部", "电影"), ("部", "手机"), ("顶", "帽子"), ("张", "地图"), ("本", "词典"),
    ("块", "手表"), ("张", "票"), ("个", "包"), ("碗", "米饭"), ("瓶", "水"),
]

# Verbs that fit any counted thing: "bought three books", "lent a bike".
_ZH_GETTING_VERBS = "买 找到 借 带 送 拿 卖 画 看到 丢".split()

# Verb-object pairs that make sense together: activities.
_ZH_ACTIVITIES = """
看书 吃饭 喝茶 买东西 写信 看电影 听音乐 做饭 学习中文 做作业 洗衣服 打扫房间
读报纸 唱歌 踢足球 打篮球 散步 跑步 游泳 休息 聊天 拍照片 画画 修自行车 看电视
写文章 种花 喂猫 复习功课 买菜 找钥匙 练习书法
""".split()

_ZH_THING_ADJECTIVES = """
好 大 小 新 旧 贵 便宜 漂亮 重要 有意思 干净 好看 简单 奇怪 方便 有名 特别 普通
""".split()

_ZH_PERSON_ADJECTIVES = "聪明 认真 热情 年轻 友好 安静 有名 可爱 幽默 勇敢 细心 善良".split()

_ZH_WEATHER = "好 热 冷 不错 暖和 凉快 糟糕 闷热".split()

_ZH_FEELINGS = "高兴 忙 累 开心 饿 紧张 着急 放松".split()

_ZH_PLACES = """
学校 公园 图书馆 商店 家里 医院 公司 北京 上海 火车站 饭店 超市 办公室
教室 银行 机场 广州 杭州 河边 山上 村子里 博物馆 咖啡馆 操场 厨房 南京
""".split()

_ZH_TIMES = """
今天 昨天 明天 现在 早上 下午 晚上 上个星期 下个月 去年 每天 周末 春天
冬天 刚才 后来 星期一 中午 夏天 秋天 明年 星期六
""".split()

_ZH_ADVERBS = "经常 马上 一起 终于 常常 每天都 还是 偶尔".split()

_ZH_NUMBERS = "一 两 三 五 几 四 十 六 八 二十".split()

_ZH_WORDS = {
    "person": _ZH_PEOPLE,
    "pronoun": _ZH_PRONOUNS,
    "counted": [classifier + noun for classifier, noun in _ZH_COUNTED_NOUNS],
    "noun": [noun for _, noun in _ZH_COUNTED_NOUNS],
    "get": _ZH_GETTING_VERBS,
    "doing": _ZH_ACTIVITIES,
    "thing_adj": _ZH_THING_ADJECTIVES,
    "person_adj": _ZH_PERSON_ADJECTIVES,
    "weather": _ZH_WEATHER,
    "feeling": _ZH_FEELINGS,
    "place": _ZH_PLACES,
    "time": _ZH_TIMES,
    "adv": _ZH_ADVERBS,
    "number": _ZH_NUMBERS,
}


def _yuan(random: Callable[[], float]) -> str:
    return str(_uniform_int(random, *PRICE_RANGE))


_ZH_GENERATED = {"year": _year, "count": _count, "price": _yuan}

_ZH_RULES: dict[str, list[tuple[float, str]]] = {
    "sentence": [
        (10, "{time}，{subject}在{place}{get}了{number}{counted}。"),
        (8, "{subject}觉得这{counted}很{thing_adj}。"),
        (6, "{subject}说：“我们{time}一起去{place}{doing}吧。”"),
        (5, "因为天气太{weather}了，所以{subject}没有去{place}。"),
        (5, "{person}和{person}都喜欢在{place}{doing}。"),
        (4, "你{time}想不想去{place}{doing}？"),
        (6, "{place}的{noun}非常{thing_adj}。"),
        (3, "{person}在{year}年{get}了{count}{counted}。"),
        (4, "虽然这{counted}很{thing_adj}，但是{subject}还是{get}了。"),
        (3, "{person}问{person}：“这{counted}多少钱？”"),
        (2, "这{counted}要{price}块钱。"),
        (4, "{time}天气很{weather}，{subject}{adv}{doing}。"),
        (3, "{subject}是一个很{person_adj}的人。"),
        (3, "我不知道{person}为什么不想{doing}。"),
        (3, "{subject}把{noun}放在{place}了。"),
        (2, "{subject}{time}要去{place}，你去不去？"),
        (3, "{subject}{time}很{feeling}，因为要{doing}。"),
    ],
    "subject": [(3, "{person}"), (2, "{pronoun}")],
}

_CHINESE = _compile_grammar(_ZH_RULES, _ZH_WORDS, _ZH_GENERATED)


# --- Paragraphs --------------------------------------------------------------

def _capitalize_first_letter(sentence: str) -> str:
    """Upper-case the first letter, also when the sentence opens with a quote."""
    start = 1 if sentence.startswith('"') else 0
    return sentence[:start] + sentence[start].upper() + sentence[start + 1:]


def _english_paragraph(random: Callable[[], float], target_chars: int) -> str:
    sentence_symbol = _ENGLISH["sentence"]
    sentences, length = [], 0
    while length < target_chars:
        parts: list[str] = []
        sentence_symbol.expand(random, parts)
        sentence = _capitalize_first_letter("".join(parts))
        sentences.append(sentence)
        length += len(sentence) + len(ENGLISH_SENTENCE_SEPARATOR)
    return _A_BEFORE_VOWEL.sub(r"\1n ", ENGLISH_SENTENCE_SEPARATOR.join(sentences))


def _chinese_paragraph(random: Callable[[], float], target_chars: int) -> str:
    sentence_symbol = _CHINESE["sentence"]
    parts: list[str] = []
    length = 0
    while length < target_chars:
        before = len(parts)
        sentence_symbol.expand(random, parts)
        length += sum(len(part) for part in parts[before:])
    return CHINESE_SENTENCE_SEPARATOR.join(parts)


def generate_corpus(n_chars: int, seed: int = 0, chinese_fraction: float = 0.2) -> str:
    """Synthetic English and Chinese text of exactly ``n_chars`` characters.

    Paragraphs (separated by a blank line) are English or, with probability
    ``chinese_fraction``, Chinese; English and Chinese paragraphs have the same
    length distribution, so about that share of the characters is Chinese.
    Sentences come from a small grammar whose words follow a Zipf-like law.

    The text for a seed is a fixed stream cut at ``n_chars``: a shorter corpus is
    a prefix of a longer one with the same seed and fraction. Different seeds
    give different text.

    Args:
        n_chars: number of characters (not bytes) to return, ``>= 0``.
        seed: integer seed of ``random.Random``.
        chinese_fraction: share of paragraphs in Chinese, between 0 and 1.

    Returns:
        A ``str`` of length ``n_chars``.
    """
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 0:
        raise ValueError(f"n_chars must be an integer >= 0, got {n_chars!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0.0 <= chinese_fraction <= 1.0:
        raise ValueError(f"chinese_fraction must be between 0 and 1, got {chinese_fraction!r}")

    random = Random(seed).random
    paragraphs: list[str] = []
    length = 0
    while length < n_chars:
        is_chinese = random() < chinese_fraction
        target = _uniform_int(random, PARAGRAPH_MIN_CHARS, PARAGRAPH_MAX_CHARS)
        make = _chinese_paragraph if is_chinese else _english_paragraph
        paragraph = make(random, target)
        paragraphs.append(paragraph)
        length += len(paragraph) + len(PARAGRAPH_SEPARATOR)
    return PARAGRAPH_SEPARATOR.join(paragraphs)[:n_chars]


# --- Standard-library docstrings ---------------------------------------------

# Modules whose docstrings are read, in this order. Importing any of them has no
# side effect (no window, no browser, no printing); a module missing from some
# Python version is skipped.
STDLIB_MODULES = tuple(sorted("""
abc argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections
colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime
decimal difflib email email.message enum filecmp fnmatch fractions ftplib
functools getopt gettext glob gzip hashlib heapq hmac html html.parser
http.client http.cookies imaplib inspect io ipaddress itertools json locale
logging lzma mailbox math mimetypes numbers operator optparse pathlib pickle
pkgutil poplib pprint queue quopri random re reprlib sched secrets selectors
shelve shlex shutil smtplib socket sqlite3 statistics string struct subprocess
tarfile tempfile textwrap threading timeit tokenize trace traceback types typing
unittest urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom
xml.etree.ElementTree zipfile zoneinfo
""".split()))


def _import_quietly(name: str):
    """The module, or None when this Python cannot import it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # any failure means: skip this module
            return None


def _docstrings_of(module) -> list[str]:
    """Docstrings of a module, its public classes and functions, and their methods.

    Only objects defined in the module itself are read (not names it imports),
    sorted by name, so the order never depends on dictionary order.
    """
    docs = [inspect.getdoc(module)]
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            docs.append(inspect.getdoc(obj))
            for method_name in sorted(vars(obj)):
                method = vars(obj)[method_name]
                if not method_name.startswith("_") and inspect.isfunction(method):
                    docs.append(inspect.getdoc(method))
        elif inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj))
    return [doc for doc in docs if doc]


def stdlib_corpus(max_chars: int | None = None) -> str:
    """English prose from the docstrings of Python's standard library.

    Walks ``STDLIB_MODULES`` in order and collects each module's docstring, then
    those of its public classes (with their methods) and functions, sorted by
    name; a docstring seen before is not repeated. Docstrings are joined with a
    blank line. The result is the same on every run of a given Python version.

    Args:
        max_chars: cut the text to at most this many characters (None: all).

    Returns:
        A ``str`` of English text, with some code examples in it.
    """
    if max_chars is not None and (isinstance(max_chars, bool)
                                  or not isinstance(max_chars, int) or max_chars < 0):
        raise ValueError(f"max_chars must be None or an integer >= 0, got {max_chars!r}")
    seen: set[str] = set()
    docs: list[str] = []
    length = 0
    for name in STDLIB_MODULES:
        if max_chars is not None and length >= max_chars:
            break
        module = _import_quietly(name)
        if module is None:
            continue
        with warnings.catch_warnings():
            # Reading some docstrings (typing.io, typing.re) warns of deprecation.
            warnings.simplefilter("ignore")
            module_docs = _docstrings_of(module)
        for doc in module_docs:
            if doc not in seen:
                seen.add(doc)
                docs.append(doc)
                length += len(doc) + len(PARAGRAPH_SEPARATOR)
    text = PARAGRAPH_SEPARATOR.join(docs)
    return text if max_chars is None else text[:max_chars]


# --- Your own text -----------------------------------------------------------

def load_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file of your own, for example to train a tokenizer on.

    A byte-order mark at the start is dropped; the text is otherwise returned
    exactly as stored (line endings included).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is a directory, cannot be read, or is not UTF-8.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(
            f"no text file at {str(file)!r} (looked in {str(file.resolve())!r}); "
            "check the path, or use generate_corpus() for a built-in corpus")
    if file.is_dir():
        raise ValueError(
            f"{str(file)!r} is a directory; give the path of one text file inside it")
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {str(file)!r}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{str(file)!r} is not UTF-8 text: byte {data[error.start]:#04x} at offset "
            f"{error.start} cannot be decoded; save the file as UTF-8 (for example "
            f"`iconv -f latin1 -t utf-8 in.txt > out.txt`) and try again") from None
