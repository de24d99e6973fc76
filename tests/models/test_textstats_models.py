"""handlers.textstats on the bundled embeddings model (multilingual-e5-small 4-bit): calibrated sentiment on a
held-out set, and topic clustering of a bilingual team chat."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from engines.base import EngineRequest
from engines.embeddings import E5Engine, Embeddings, EmbedRequest, Kind
from handlers.textstats import Embed, SentimentClassifier, cluster, representatives, topic_vectors

pytestmark = pytest.mark.slow

RecordProperty = Callable[[str, Any], None]
HELDOUT_PATH = Path(__file__).resolve().parents[1] / "data" / "sentiment_heldout.json"

TOPICS: dict[str, list[str]] = {
    "deploy": [
        "The CI pipeline failed again on the integration tests.",
        "Deploy to staging is stuck at the migration step.",
        "Who broke the main branch build? The lint job is red.",
        "The Docker image push timed out in the release job.",
        "Rollback done, the canary deploy was throwing 500s.",
        "A flaky test in the payment service keeps failing the pipeline.",
        "Kubernetes rollout is hanging, pods stuck in CrashLoopBackOff.",
        "Can someone re-run the failed GitHub Actions workflow?",
        "Production deploy failed because of a missing env variable.",
        "The build cache got corrupted, CI takes an hour now.",
        "CI又挂了，单元测试一直超时。",
        "部署到生产环境失败了，正在回滚。",
        "流水线卡在镜像构建这一步了。",
        "谁改了构建脚本？主分支编译不过了。",
        "预发布环境部署报错，数据库迁移没跑成功。",
        "Jenkins任务一直失败，日志里全是依赖下载超时。",
        "发布流程又出问题了，容器启动不了。",
        "测试流水线太慢了，一次要跑四十分钟。",
        "线上部署卡住了，k8s的pod一直在重启。",
        "集成测试在CI上随机失败，本地跑没问题。",
    ],
    "food": [
        "Anyone want to grab lunch at the ramen place today?",
        "I'm ordering pizza for the team, what toppings do you want?",
        "The new Thai restaurant downstairs is really good.",
        "Let's do sushi for Friday lunch.",
        "Is anyone going to the cafeteria? I'm starving.",
        "Who wants bubble tea? I'm placing a group order.",
        "Please tell me your vegetarian preferences for the team dinner.",
        "Lunch at 12:30 in the kitchen, someone brought homemade dumplings.",
        "Coffee and donuts in the break room!",
        "Burgers or tacos for lunch? Vote please.",
        "中午一起去吃火锅吗？",
        "我订了外卖，有人要加一份饺子吗？",
        "楼下新开了一家面馆，味道不错。",
        "今天午饭吃什么？食堂还是点外卖？",
        "周五聚餐去吃烤肉，大家有忌口吗？",
        "下午茶到了，奶茶和蛋糕在茶水间。",
        "有人想一起去吃麻辣烫吗？",
        "团队晚饭订在川菜馆，七点见。",
        "我带了水果，放在冰箱里了，大家随便吃。",
        "午饭想吃点清淡的，有推荐吗？",
    ],
    "hiring": [
        "I have a phone screen with a backend candidate at 3pm.",
        "Can someone take the system design interview tomorrow?",
        "We got 40 applications for the frontend role.",
        "Please submit your interview feedback in the hiring tool by EOD.",
        "The candidate accepted our offer and starts next month!",
        "We need one more interviewer for the onsite loop on Thursday.",
        "The job description for the data engineer position needs review.",
        "The recruiter says the senior candidate has a competing offer.",
        "Let's have a hiring committee sync to decide between the two finalists.",
        "I'm updating the coding interview question bank.",
        "明天下午有两个候选人来面试。",
        "这个岗位的简历太多了，谁能帮忙筛一下？",
        "面试反馈请今天之内填到系统里。",
        "候选人接受了offer，下个月入职。",
        "技术面试官还缺一个，谁有空？",
        "招聘需求已经发给HR了，前端要招两个人。",
        "二面的候选人算法题答得不错。",
        "猎头推荐了一个资深后端工程师。",
        "校招宣讲会安排在下周三。",
        "薪资谈判还在进行，候选人希望再涨一点。",
    ],
}


@pytest.fixture(scope="module")
def embed(e5_engine: E5Engine) -> Embed:
    async def embed(texts: list[str], kind: str) -> list[list[float]]:
        [result] = e5_engine.run([EngineRequest(EmbedRequest(texts, cast(Kind, kind)))])
        assert isinstance(result, Embeddings), result
        return result.vectors

    return embed


def best_agreement(labels: list[int], truth: list[int]) -> float:
    k = max(max(labels), max(truth)) + 1
    return max(
        sum(perm[a] == b for a, b in zip(labels, truth, strict=True)) for perm in itertools.permutations(range(k))
    ) / len(truth)


async def test_sentiment_heldout_accuracy_and_coverage(embed: Embed, record_property: RecordProperty) -> None:
    heldout = json.loads(HELDOUT_PATH.read_text(encoding="utf-8"))
    classifier = SentimentClassifier()
    results = await classifier.classify([item["text"] for item in heldout], embed)
    confident = [(r, item) for r, item in zip(results, heldout, strict=True) if not r.unsure]
    coverage = len(confident) / len(heldout)
    accuracy = sum(r.label == item["label"] for r, item in confident) / max(1, len(confident))
    overall = sum(r.label == item["label"] for r, item in zip(results, heldout, strict=True)) / len(heldout)
    report = (f"held-out: coverage {coverage:.3f}, accuracy of confident {accuracy:.3f}, overall {overall:.3f}; "
              f"threshold {classifier.threshold:.3f}, temperature {classifier.temperature:.3f}, "
              f"calibration out-of-fold accuracy {classifier.cv_accuracy:.3f}, coverage {classifier.cv_coverage:.3f}")
    print(report)
    record_property("sentiment", report)
    assert coverage >= 0.6, report
    assert accuracy >= 0.85, report
    assert classifier.cv_accuracy >= 0.85, report


async def test_topics_bilingual_chat(embed: Embed, record_property: RecordProperty) -> None:
    texts = [t for messages in TOPICS.values() for t in messages]
    truth = [i for i, messages in enumerate(TOPICS.values()) for _ in messages]
    vectors = await topic_vectors(texts, embed)

    given = cluster(vectors, n=3)
    auto = cluster(vectors)
    report = (f"topics: purity n=3 {best_agreement(given, truth):.3f}; auto n={len(set(auto))}, "
              f"purity {best_agreement(auto, truth):.3f}")
    print(report)
    record_property("topics", report)
    assert best_agreement(given, truth) >= 0.9, report
    assert len(set(auto)) == 3, report
    assert best_agreement(auto, truth) >= 0.9, report

    # The samples shown to the chat engine for naming each come from a single true topic.
    samples = representatives(vectors, given, texts, k=5)
    topic_of = dict(zip(texts, truth, strict=True))
    for picked in samples.values():
        assert len(picked) == 5
        assert len({topic_of[t] for t in picked}) == 1, picked
