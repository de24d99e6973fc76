"""Every user-facing string, in English and Chinese.

Look strings up with `t(key, locale, **params)`. A test checks every key has both languages
and the same placeholders in each.
"""

from __future__ import annotations

SUPPORTED = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    # general
    "greeting": {
        "en": "Hi{name}! I'm the team bot. Try one of these, or type /help.",
        "zh": "你好{name}！我是团队机器人。点一个试试，或输入 /help。",
    },
    "help_title": {"en": "Commands", "zh": "命令列表"},
    "help_footer": {
        "en": "Type a command with / to start. Options go as name:value, e.g. /ping",
        "zh": "输入 / 开头的命令开始使用。选项写作 名称:值，例如 /ping",
    },
    "help_try": {"en": "Try:", "zh": "试试："},
    "available": {
        "en": "I can't chat freely yet. Here is what I can do now — type /help for details: {commands}",
        "zh": "我还不能自由聊天。现在能做的事如下（输入 /help 查看详情）：{commands}",
    },
    "unknown_command_suggest": {
        "en": "Unknown command /{command}. Did you mean /{suggestion}? Type /help for the list.",
        "zh": "未知命令 /{command}。你是不是想用 /{suggestion}？输入 /help 查看命令列表。",
    },
    "unknown_command_plain": {
        "en": "Unknown command /{command}. Type /help for the list.{suggestion}",
        "zh": "未知命令 /{command}。输入 /help 查看命令列表。{suggestion}",
    },
    "unknown_action": {
        "en": "That button no longer works. Please run the command again.",
        "zh": "这个按钮已失效，请重新运行命令。",
    },
    "out_of_range": {
        "en": "/{command}: {option} must be between {low} and {high}.",
        "zh": "/{command}：{option} 必须在 {low} 到 {high} 之间。",
    },
    "missing_option": {
        "en": "/{command} needs {option}: {description}",
        "zh": "/{command} 缺少参数 {option}：{description}",
    },
    "bad_option": {
        "en": "/{command}: {option} must be {expected}, not \u201c{value}\u201d.",
        "zh": "/{command}：{option} 应为{expected}，而不是“{value}”。",
    },
    "bad_choice": {
        "en": "/{command}: {option} must be one of {choices}.",
        "zh": "/{command}：{option} 只能是 {choices} 之一。",
    },
    "unknown_option": {
        "en": "/{command} has no option {option}. It takes: {options}.",
        "zh": "/{command} 没有参数 {option}。可用参数：{options}。",
    },
    "type_text": {"en": "text", "zh": "文本"},
    "type_integer": {"en": "a whole number", "zh": "整数"},
    "type_number": {"en": "a number", "zh": "数字"},
    "type_boolean": {"en": "yes or no", "zh": "是或否"},
    "type_attachment": {"en": "an attached file", "zh": "附件"},
    "forbidden": {
        "en": "You don't have access to /{command}.",
        "zh": "你没有使用 /{command} 的权限。",
    },
    "access_denied": {
        "en": "Sorry, I'm not allowed to answer here.",
        "zh": "抱歉，我在这里没有回答的权限。",
    },
    "rate_limited": {
        "en": "You're sending messages quickly. Please wait {seconds} s and try again.",
        "zh": "你发送得有点快，请等待 {seconds} 秒后再试。",
    },
    "internal_error": {
        "en": "Sorry, something went wrong on my side (ref {ref}). Please try again.",
        "zh": "抱歉，我这边出了点问题（编号 {ref}），请重试。",
    },
    "engine_busy": {
        "en": "I'm busy right now ({engine} queue is full). Please try again in a moment.",
        "zh": "我现在很忙（{engine} 队列已满），请稍后再试。",
    },
    "engine_failed": {
        "en": "The {engine} engine failed on this request (ref {ref}). Others keep working; please try again.",
        "zh": "{engine} 引擎处理这个请求时失败了（编号 {ref}）。其他功能正常，请重试。",
    },
    "engine_unavailable": {
        "en": "The {engine} engine stopped while working on this (ref {ref}). It restarts on the next request.",
        "zh": "{engine} 引擎在处理时停止了（编号 {ref}）。下次请求时会自动重启。",
    },
    "job_timeout": {
        "en": "The {engine} engine took longer than {seconds} s, so I stopped it.",
        "zh": "{engine} 引擎超过 {seconds} 秒未完成，已停止。",
    },
    "job_cancelled": {"en": "Cancelled.", "zh": "已取消。"},
    "bad_frame": {
        "en": "I couldn't read that message (it wasn't valid JSON of a known type).",
        "zh": "无法读取这条消息（不是有效的 JSON 或类型未知）。",
    },
    # language model
    "llm_rate_limited": {
        "en": "The language model provider is rate limiting us. I retried; please try again in a minute.",
        "zh": "语言模型服务正在限流。我已重试，请一分钟后再试。",
    },
    "llm_timeout": {
        "en": "The language model took too long to answer. Please try again.",
        "zh": "语言模型响应超时，请重试。",
    },
    "llm_unreachable": {
        "en": "I can't reach the language model server right now. Please try again later.",
        "zh": "暂时无法连接语言模型服务器，请稍后再试。",
    },
    "llm_auth": {
        "en": "The language model provider refused our credentials. An operator needs to check the API key.",
        "zh": "语言模型服务拒绝了凭据，请管理员检查 API 密钥。",
    },
    "llm_provider_error": {
        "en": "The language model provider had an error ({status}). I retried; please try again later.",
        "zh": "语言模型服务出错（{status}）。我已重试，请稍后再试。",
    },
    "llm_bad_request": {
        "en": "The language model provider rejected the request ({status}): {detail}",
        "zh": "语言模型服务拒绝了请求（{status}）：{detail}",
    },
    "tool_args_invalid": {
        "en": "The model called {tool} with arguments that are not valid JSON.",
        "zh": "模型调用 {tool} 时给出的参数不是有效的 JSON。",
    },
    # chat controls
    "cmd_persona": {"en": "Show or set this channel's persona (system prompt)", "zh": "查看或设置本频道的角色（系统提示词）"},
    "opt_persona_text": {"en": "The persona, or 'clear'", "zh": "角色描述，或 clear 清除"},
    "persona_show": {"en": "Persona for this channel:\n> {persona}", "zh": "本频道的角色：\n> {persona}"},
    "persona_set": {"en": "Persona set for this channel:\n> {persona}", "zh": "已为本频道设置角色：\n> {persona}"},
    "persona_cleared": {"en": "Persona cleared; back to the default.", "zh": "已清除角色，恢复默认。"},
    "cmd_model": {"en": "Show or set the model and its parameters here", "zh": "查看或设置本频道的模型及参数"},
    "opt_model_name": {"en": "Model name, or 'default'", "zh": "模型名称，或 default"},
    "opt_engine": {"en": "Engine from the config (e.g. another provider), or 'default'", "zh": "配置中的引擎（如另一个服务商），或 default"},
    "opt_workspace_scope": {"en": "Apply to the whole workspace (admins)", "zh": "应用到整个工作区（管理员）"},
    "unknown_engine": {"en": "There is no engine {engine}. Configured: {engines}.", "zh": "没有名为 {engine} 的引擎。已配置：{engines}。"},
    "opt_temperature": {"en": "Sampling temperature, 0 to 2", "zh": "采样温度，0 到 2"},
    "opt_max_tokens": {"en": "Longest answer, in tokens", "zh": "回答的最大 token 数"},
    "opt_json": {"en": "Answer in JSON (yes/no)", "zh": "以 JSON 回答（是/否）"},
    "opt_seed": {"en": "Random seed for repeatable answers", "zh": "随机种子，用于可复现的回答"},
    "engine_default": {"en": "engine default", "zh": "引擎默认"},
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "model_show": {
        "en": "Engine: {engine} · model: {model} · temperature: {temperature} · max tokens: {max_tokens} · JSON: {json} · seed: {seed}",
        "zh": "引擎：{engine} · 模型：{model} · 温度：{temperature} · 最大 token：{max_tokens} · JSON：{json} · 种子：{seed}",
    },
    "cmd_ban_words": {"en": "Words the model must not use here", "zh": "设置模型在本频道禁止使用的词"},
    "opt_ban_words": {"en": "Comma-separated words, or 'clear'", "zh": "用逗号分隔的词，或 clear 清除"},
    "ban_words_show": {"en": "Banned words here: {words}", "zh": "本频道禁用词：{words}"},
    "ban_words_set": {"en": "Banned words set: {words}", "zh": "已设置禁用词：{words}"},
    "ban_words_cleared": {"en": "Banned words cleared.", "zh": "已清除禁用词。"},
    "ban_words_too_many": {"en": "At most {limit} banned words.", "zh": "禁用词最多 {limit} 个。"},
    "ban_words_unsupported": {
        "en": "Note: this model's provider has no tokenizer I can reach, so banned words are not applied.",
        "zh": "注意：该模型服务没有可用的分词接口，禁用词未生效。",
    },
    # memory
    "cmd_memory": {"en": "Show or switch how I remember this conversation; 'facts' lists what I know", "zh": "查看或切换对话记忆方式；facts 列出已记住的事实"},
    "opt_memory_mode": {"en": "show, facts, buffer_window, summary, summary_buffer or entity", "zh": "show、facts、buffer_window、summary、summary_buffer 或 entity"},
    "memory_buffer_window": {"en": "buffer window (the last few turns)", "zh": "窗口缓冲（最近几轮）"},
    "memory_summary": {"en": "summary (a running summary)", "zh": "摘要（持续更新的摘要）"},
    "memory_summary_text": {"en": "Summary so far: {summary}", "zh": "目前的摘要：{summary}"},
    "memory_summary_buffer": {"en": "summary buffer (a summary plus recent turns)", "zh": "摘要缓冲（摘要加最近几轮）"},
    "memory_entity": {"en": "entity memory (facts about people and things)", "zh": "实体记忆（关于人和事物的事实）"},
    "memory_set": {"en": "This channel now uses {strategy}.", "zh": "本频道现在使用{strategy}。"},
    "memory_show": {"en": "Memory: {strategy}. {messages} messages in this conversation.", "zh": "记忆方式：{strategy}。本对话共 {messages} 条消息。"},
    "memory_no_facts": {"en": "I don't know any facts yet. Switch on entity memory with /memory entity.", "zh": "我还没有记住任何事实。用 /memory entity 开启实体记忆。"},
    "memory_facts_title": {"en": "*What I remember* (delete one with /forget <number or name>):", "zh": "*我记住的事实*（用 /forget <编号或名称> 删除）："},
    "cmd_forget": {"en": "Forget a remembered fact, by number or by name", "zh": "按编号或名称删除一条记住的事实"},
    "opt_forget": {"en": "Fact number (see /memory facts) or entity name", "zh": "事实编号（见 /memory facts）或实体名称"},
    "forgot": {"en": "Forgot {count} fact(s) about {what}.", "zh": "已删除关于 {what} 的 {count} 条事实。"},
    "forgot_none": {"en": "I had nothing remembered as {what}.", "zh": "没有找到关于 {what} 的记忆。"},
    # usage and budgets
    "cmd_usage": {"en": "Tokens and cost of the last 30 days, with a chart", "zh": "最近 30 天的 token 与费用，附图表"},
    "usage_title": {"en": "*Usage in this workspace, last 30 days*", "zh": "*本工作区最近 30 天的用量*"},
    "usage_day": {"en": "day", "zh": "日期"},
    "usage_mine": {"en": "You: {calls} calls, {tokens} tokens, ${cost}.", "zh": "你：{calls} 次调用，{tokens} 个 token，${cost}。"},
    "usage_chart_title": {"en": "Tokens per day (cost above each bar)", "zh": "每日 token（柱上为费用）"},
    "scope_user": {"en": "your", "zh": "你的"},
    "scope_channel": {"en": "this channel's", "zh": "本频道的"},
    "scope_workspace": {"en": "this workspace's", "zh": "本工作区的"},
    "budget_exhausted": {"en": "I've stopped: {scope} budget of ${budget} for {days} days is used up (${spent}). An admin can raise it.", "zh": "已停止：{scope}预算 ${budget}（{days} 天）已用完（${spent}）。管理员可以提高预算。"},
    "budget_warning": {"en": "Heads-up: {percent}% of {scope} ${budget} budget is used.", "zh": "提醒：{scope}预算 ${budget} 已用 {percent}%。"},
    # chat
    "empty_message": {"en": "Your message was empty. Type a question, or /help to see what I can do.", "zh": "消息为空。请输入问题，或输入 /help 查看我能做什么。"},
    "message_truncated": {"en": "Your message has {length} characters; I read the first {limit}.", "zh": "你的消息有 {length} 个字符，我只读取了前 {limit} 个。"},
    "empty_answer": {"en": "(The model gave an empty answer. Try rephrasing.)", "zh": "（模型返回了空回答，请换个说法再试。）"},
    # feedback and fine-tuning
    "feedback_thanks_up": {"en": "Thanks — noted as a good answer.", "zh": "谢谢，已记为好的回答。"},
    "feedback_thanks_down": {"en": "Thanks — noted. I'll try to do better.", "zh": "谢谢反馈，我会改进。"},
    "cmd_feedback": {"en": "Export well-rated conversations as fine-tuning JSONL", "zh": "将好评对话导出为微调用 JSONL"},
    "opt_feedback_action": {"en": "export", "zh": "export（导出）"},
    "feedback_nothing": {"en": "No answers have a 👍 yet, so there is nothing to export.", "zh": "还没有获得 👍 的回答，没有可导出的内容。"},
    "feedback_exported": {"en": "{count} well-rated conversation(s) in OpenAI's chat fine-tuning format.", "zh": "{count} 段好评对话，OpenAI 对话微调格式。"},
    "cmd_finetune": {"en": "Fine-tune a model on the well-rated conversations (OpenAI)", "zh": "用好评对话微调模型（OpenAI）"},
    "opt_finetune_action": {"en": "start or status", "zh": "start（开始）或 status（状态）"},
    "opt_finetune_job": {"en": "Job id, for status", "zh": "任务 ID（查询状态时）"},
    "finetune_started": {"en": "Fine-tuning job {job} started on {model} with {count} example(s). I'll report its progress here.", "zh": "微调任务 {job} 已在 {model} 上启动，共 {count} 条样本。我会在这里汇报进度。"},
    "finetune_status": {"en": "Fine-tuning job {job}: {status}.", "zh": "微调任务 {job}：{status}。"},
    "finetune_done": {"en": "Fine-tuning job {job} succeeded: model {model} ({tokens} tokens trained). Use it with /model {model}", "zh": "微调任务 {job} 完成：模型 {model}（训练 {tokens} 个 token）。用 /model {model} 启用。"},
    "finetune_failed": {"en": "Fine-tuning job {job} ended {status}: {error}", "zh": "微调任务 {job} 结束，状态 {status}：{error}"},
    "tool_unknown": {"en": "There is no tool called {tool}. Available: {tools}.", "zh": "没有名为 {tool} 的工具。可用工具：{tools}。"},
    "tool_args_missing": {"en": "{tool} needs: {missing}.", "zh": "{tool} 缺少参数：{missing}。"},
    "tool_args_unknown": {"en": "{tool} has no argument {argument}.", "zh": "{tool} 没有参数 {argument}。"},
    "tool_args_type": {"en": "{tool}: {argument} must be {expected}.", "zh": "{tool}：{argument} 应为 {expected}。"},
    # discord
    "discord_no_permission": {"en": "I can't post in #{channel}: I'm missing permissions there. Ask an admin to let me send messages, or talk to me here.", "zh": "我无法在 #{channel} 发消息：缺少权限。请让管理员授予发送消息的权限，或在这里和我对话。"},
    "discord_file_too_large": {"en": "{name} is larger than this server's upload limit ({limit_mb} MB), so I can't attach it.", "zh": "{name} 超过了本服务器的上传限制（{limit_mb} MB），无法附上。"},
    # speech
    "audio_missing": {"en": "Attach an audio file (a voice clip or a recording).", "zh": "请附上一个音频文件（语音或录音）。"},
    "audio_silent": {"en": "I listened to {name} but heard no speech.", "zh": "我听了 {name}，但没有听到说话声。"},
    "speech_fallback": {"en": "Note: {note}", "zh": "注意：{note}"},
    "heard": {"en": "🎙️ ({language}) {text}", "zh": "🎙️（{language}）{text}"},
    "transcript_caption": {"en": "Transcript (language: {language})", "zh": "转写稿（语言：{language}）"},
    "audio_summary": {"en": "*Summary of {minutes} minutes*\n{summary}", "zh": "*{minutes} 分钟录音的摘要*\n{summary}"},
    "voice_settings": {"en": "Voice clips here: {mode}. Answers also spoken: {spoken}.", "zh": "本频道语音处理方式：{mode}。同时朗读回答：{spoken}。"},
    "cmd_transcribe": {"en": "Transcribe an attached recording (text, SRT or VTT)", "zh": "转写附带的录音（文本、SRT 或 VTT）"},
    "opt_audio_file": {"en": "The recording", "zh": "录音文件"},
    "opt_transcript_format": {"en": "text, srt or vtt", "zh": "text、srt 或 vtt"},
    "cmd_summarize_audio": {"en": "Transcribe a recording and summarize it with action items", "zh": "转写录音并生成摘要和待办事项"},
    # moderation and quotas
    "moderation_blocked_message": {"en": "I can't pass that message on: it breaks this workspace's content policy ({categories}). An admin can see the reason in /mod log.", "zh": "这条消息违反了本工作区的内容规范（{categories}），无法处理。管理员可在 /mod log 中查看原因。"},
    "moderation_blocked_document": {"en": "I didn't add {name}: its text breaks this workspace's content policy ({categories}).", "zh": "未添加 {name}：其内容违反了本工作区的内容规范（{categories}）。"},
    "moderation_blocked_transcript": {"en": "I transcribed the recording but won't use it: it breaks this workspace's content policy ({categories}).", "zh": "录音已转写，但内容违反了本工作区的内容规范（{categories}），不会继续处理。"},
    "moderation_blocked_prompt": {"en": "I can't use that prompt: it breaks this workspace's content policy ({categories}).", "zh": "无法使用该提示：它违反了本工作区的内容规范（{categories}）。"},
    "moderation_self_harm": {"en": "It sounds like you're going through something really hard. You don't have to face it alone: please reach out to someone you trust, or a local crisis line (in many countries you can call or text 988 or your emergency number). I've let the moderators know.", "zh": "听起来你正在经历很艰难的事情。你不必独自面对：请联系你信任的人，或拨打当地的心理援助热线（如全国心理援助热线 400-161-9995）或紧急电话。我已通知管理员。"},
    "moderation_warning": {"en": "Heads-up: that message comes close to this workspace's content policy ({categories}).", "zh": "提醒：这条消息接近本工作区内容规范的界限（{categories}）。"},
    "moderation_report": {"en": "Moderation report: {user} ({user_id}) in {channel}, {source}: {categories}\n> {excerpt}", "zh": "审核报告：{user}（{user_id}）在 {channel}，来源 {source}：{categories}\n> {excerpt}"},
    "reply_removed": {"en": "(This answer was removed: it broke this workspace's content policy.)", "zh": "（该回答已被移除：违反了本工作区的内容规范。）"},
    "reply_blocked": {"en": "I stopped that answer because it broke this workspace's content policy. Try asking differently.", "zh": "该回答违反了本工作区的内容规范，已停止。请换个方式提问。"},
    "muted": {"en": "You're muted here until {until}; an admin can lift it with /mod unmute.", "zh": "你在这里被禁言至 {until}；管理员可用 /mod unmute 解除。"},
    "mute_forever": {"en": "further notice", "zh": "另行通知"},
    "mod_cat_harassment": {"en": "harassment", "zh": "骚扰"},
    "mod_cat_hate": {"en": "hate", "zh": "仇恨"},
    "mod_cat_sexual": {"en": "sexual content", "zh": "色情内容"},
    "mod_cat_violence": {"en": "violence", "zh": "暴力"},
    "mod_cat_self_harm": {"en": "self-harm", "zh": "自我伤害"},
    "mod_cat_illicit": {"en": "illicit activity", "zh": "违法活动"},
    "mod_action_allow": {"en": "allow", "zh": "允许"},
    "mod_action_warn": {"en": "warn", "zh": "提醒"},
    "mod_action_block": {"en": "block", "zh": "拦截"},
    "mod_action_report": {"en": "block and report", "zh": "拦截并上报"},
    "mod_policy_title": {"en": "Moderation policy here", "zh": "本频道审核规则"},
    "mod_policy_line": {"en": "{category}: at {threshold} → {action}", "zh": "{category}：达到 {threshold} → {action}"},
    "mod_report_channel": {"en": "Reports go to: {channel}", "zh": "报告发送至：{channel}"},
    "mod_none": {"en": "(not set)", "zh": "（未设置）"},
    "mod_policy_what": {"en": "Say what to change, e.g. /mod policy category:hate threshold:0.4 then:report", "zh": "请说明要修改的内容，例如 /mod policy category:hate threshold:0.4 then:report"},
    "mod_log_empty": {"en": "No moderation decisions yet.", "zh": "暂无审核记录。"},
    "mod_log_title": {"en": "Moderation log (latest {count})", "zh": "审核记录（最近 {count} 条）"},
    "mod_which_user": {"en": "Which user? Mention them or give their id.", "zh": "哪位用户？请 @ 对方或给出用户 ID。"},
    "mod_muted": {"en": "Muted {user} until {until}.", "zh": "已禁言 {user}，直至 {until}。"},
    "mod_unmuted": {"en": "{user} can talk to me again.", "zh": "{user} 已解除禁言。"},
    "mod_not_muted": {"en": "{user} isn't muted.", "zh": "{user} 没有被禁言。"},
    "quota_exceeded": {"en": "You've used today's {unit} ({limit}). It resets at midnight UTC, or an admin can reset it with /quota.", "zh": "你今天的{unit}额度（{limit}）已用完。额度在 UTC 零点重置，管理员也可用 /quota 重置。"},
    "quota_reset": {"en": "Reset today's quota for {user}.", "zh": "已重置 {user} 今天的额度。"},
    "quota_none": {"en": "No daily quotas are set for the {role} role.", "zh": "{role} 角色没有设置每日额度。"},
    "quota_title": {"en": "Today's quota for {user} ({role})", "zh": "{user}（{role}）今天的额度"},
    "quota_line": {"en": "{unit}: {used} of {limit} used, {left} left", "zh": "{unit}：已用 {used} / {limit}，剩余 {left}"},
    "unit_messages": {"en": "messages", "zh": "消息"},
    "unit_audio_minutes": {"en": "audio minutes", "zh": "音频分钟数"},
    "unit_images": {"en": "images", "zh": "图片"},
    "unit_video_seconds": {"en": "video seconds", "zh": "视频秒数"},
    "cmd_mod": {"en": "Moderation (admins): policy, log, mute, unmute", "zh": "内容审核（管理员）：规则、记录、禁言、解除禁言"},
    "opt_mod_action": {"en": "policy, log, mute or unmute", "zh": "policy、log、mute 或 unmute"},
    "opt_mod_user": {"en": "The user (mention or id)", "zh": "用户（@ 或 ID）"},
    "opt_mod_category": {"en": "harassment, hate, sexual, violence, self_harm or illicit", "zh": "harassment、hate、sexual、violence、self_harm 或 illicit"},
    "opt_mod_threshold": {"en": "Score (0-1) at which the action applies", "zh": "触发动作的分数（0-1）"},
    "opt_mod_then": {"en": "allow, warn, block or report", "zh": "allow、warn、block 或 report"},
    "opt_mod_minutes": {"en": "How long (minutes; default: until unmuted)", "zh": "时长（分钟；默认直到解除）"},
    "opt_mod_count": {"en": "How many entries", "zh": "条数"},
    "opt_mod_report_channel": {"en": "The moderators' channel (id)", "zh": "管理员频道（ID）"},
    "cmd_quota": {"en": "Today's quota: what's used and left", "zh": "今天的额度：已用和剩余"},
    "opt_quota_user": {"en": "Whose (admins only)", "zh": "查看谁的额度（仅管理员）"},
    "opt_quota_reset": {"en": "Reset it (admins only)", "zh": "重置（仅管理员）"},
    # text analytics
    "sentiment_empty": {"en": "Give me some text, e.g. /sentiment The release went great!", "zh": "请给出文字，例如 /sentiment 这次发布很顺利！"},
    "sentiment_result": {"en": "Sentiment: *{label}* ({confidence}% sure, {method})", "zh": "情感：*{label}*（置信度 {confidence}%，{method}）"},
    "sentiment_positive": {"en": "positive", "zh": "积极"},
    "sentiment_negative": {"en": "negative", "zh": "消极"},
    "sentiment_neutral": {"en": "neutral", "zh": "中性"},
    "by_embeddings": {"en": "by embeddings", "zh": "基于向量"},
    "by_chat": {"en": "checked by the chat model", "zh": "由对话模型复核"},
    "similar_empty": {"en": "What should I look for? e.g. /similar deploy failed on staging", "zh": "要找什么？例如 /similar 预发布环境部署失败"},
    "similar_none": {"en": "No earlier messages here to compare with yet.", "zh": "这里还没有可比较的历史消息。"},
    "similar_title": {"en": "Messages like \"{text}\"", "zh": "与“{text}”相似的消息"},
    "similar_line": {"en": "{n}. ({score}) {text} — {when}", "zh": "{n}.（{score}）{text} — {when}"},
    "topics_too_few": {"en": "There are only {count} messages here; /topics needs at least {needed}.", "zh": "这里只有 {count} 条消息，/topics 至少需要 {needed} 条。"},
    "topics_embedding": {"en": "Reading {count} messages", "zh": "正在读取 {count} 条消息"},
    "topics_title": {"en": "{count} topics in the last {messages} messages", "zh": "最近 {messages} 条消息中的 {count} 个话题"},
    "topics_line": {"en": "*{name}*: {count} messages ({share}%), e.g. {examples}", "zh": "*{name}*：{count} 条（{share}%），例如 {examples}"},
    "cmd_sentiment": {"en": "Is a text positive, negative or neutral?", "zh": "判断一段文字是积极、消极还是中性"},
    "opt_text": {"en": "The text", "zh": "文字"},
    "cmd_topics": {"en": "Group this channel's recent messages into topics", "zh": "把本频道最近的消息归纳成话题"},
    "opt_topics_n": {"en": "How many topics (default: found automatically)", "zh": "话题数量（默认自动确定）"},
    "cmd_similar": {"en": "Find earlier messages in this channel like a text", "zh": "在本频道查找与某段文字相似的历史消息"},
    # documents
    "doc_unsupported": {"en": "I can't read {name}: {ext} files aren't supported. I read {supported}.", "zh": "无法读取 {name}：不支持 {ext} 文件。支持的格式：{supported}。"},
    "doc_encrypted": {"en": "{name} is encrypted (password-protected). Please upload a copy without a password.", "zh": "{name} 已加密（有密码保护）。请上传一份不带密码的副本。"},
    "doc_malformed": {"en": "{name} looks damaged and couldn't be read ({detail}). Nothing was added.", "zh": "{name} 似乎已损坏，无法读取（{detail}）。未添加任何内容。"},
    "doc_empty": {"en": "{name} has no text I can read (is it a scan or empty?). Nothing was added.", "zh": "{name} 中没有可读取的文字（是扫描件或空文件吗？）。未添加任何内容。"},
    "doc_too_large_unpacked": {"en": "{name} unpacks to more than {limit_mb} MB, which is more than I accept. Nothing was added.", "zh": "{name} 解压后超过 {limit_mb} MB，超出上限。未添加任何内容。"},
    "doc_too_many_pages": {"en": "{name} has more than {limit} pages, which is more than I accept. Please split it.", "zh": "{name} 超过 {limit} 页，超出上限。请拆分后再上传。"},
    "doc_embedding": {"en": "Indexing passages {done}/{total}", "zh": "正在索引段落 {done}/{total}"},
    "doc_duplicate": {"en": "{name} is already in this knowledge base (#{id}); nothing new was added.", "zh": "{name} 已在知识库中（#{id}），未重复添加。"},
    "kb_workspace": {"en": "the whole workspace", "zh": "整个工作区"},
    "kb_channel": {"en": "this channel", "zh": "本频道"},
    "doc_added_title": {"en": "Added to the knowledge base: {title}", "zh": "已加入知识库：{title}"},
    "doc_added": {"en": "#{id} {name}: {pages} page(s), {chunks} passage(s), for {scope}. Ask with /ask <question>.", "zh": "#{id} {name}：{pages} 页，{chunks} 个段落，范围：{scope}。用 /ask <问题> 提问。"},
    "doc_missing": {"en": "Attach a document to /docs add (PDF, DOCX, PPTX, Markdown, text, HTML or CSV).", "zh": "请在 /docs add 时附上文档（PDF、DOCX、PPTX、Markdown、文本、HTML 或 CSV）。"},
    "docs_mode_now": {"en": "Document mode here: {state}. When it's on, plain messages are answered from your documents.", "zh": "本频道文档模式：{state}。开启后，普通消息将根据文档回答。"},
    "docs_none": {"en": "There are no documents here yet. Upload one, or use /docs add ({formats}).", "zh": "这里还没有文档。请上传文档或使用 /docs add（{formats}）。"},
    "docs_title": {"en": "Documents ({count})", "zh": "文档（{count}）"},
    "docs_line": {"en": "#{id} {name}: {pages} page(s), {chunks} passage(s), {scope}", "zh": "#{id} {name}：{pages} 页，{chunks} 个段落，{scope}"},
    "doc_which": {"en": "Which document? Give its name or #id (see /docs list).", "zh": "哪个文档？请给出名称或 #编号（见 /docs list）。"},
    "doc_not_found": {"en": "No document here matches \"{ref}\" (see /docs list).", "zh": "这里没有与“{ref}”匹配的文档（见 /docs list）。"},
    "doc_ambiguous": {"en": "\"{ref}\" matches several documents: {matches}. Use the #id.", "zh": "“{ref}”匹配多个文档：{matches}。请使用 #编号。"},
    "doc_removed": {"en": "Removed {name} (#{id}) and its passages.", "zh": "已删除 {name}（#{id}）及其段落。"},
    "ask_empty": {"en": "Ask a question, e.g. /ask How many vacation days do we get?", "zh": "请输入问题，例如 /ask 我们有多少天年假？"},
    "ask_not_found": {"en": "I could not find this in your documents.", "zh": "我在你们的文档中没有找到相关内容。"},
    "sources": {"en": "*Sources*", "zh": "*来源*"},
    "page_ref": {"en": "p. {page}", "zh": "第 {page} 页"},
    "doc_summary_title": {"en": "Summary: {title}", "zh": "摘要：{title}"},
    "summarizing": {"en": "Summarizing part {done}/{total}", "zh": "正在摘要第 {done}/{total} 部分"},
    "cmd_docs": {"en": "Manage the knowledge base: add, list, remove documents; document mode", "zh": "管理知识库：添加、列出、删除文档；文档模式"},
    "opt_docs_action": {"en": "add, list, remove or mode", "zh": "add、list、remove 或 mode"},
    "opt_docs_target": {"en": "Document name or #id (remove), or on/off (mode)", "zh": "文档名称或 #编号（remove），或 on/off（mode）"},
    "opt_doc_file": {"en": "The document", "zh": "文档"},
    "cmd_ask": {"en": "Ask a question about your documents (answers cite their sources)", "zh": "就文档提问（回答附带来源）"},
    "opt_question": {"en": "Your question", "zh": "你的问题"},
    "opt_quotes": {"en": "Also quote the passages", "zh": "同时引用原文段落"},
    "cmd_summarize": {"en": "Summarize a document from the knowledge base", "zh": "摘要知识库中的文档"},
    "opt_document": {"en": "Document name or #id", "zh": "文档名称或 #编号"},
    "cmd_speak": {"en": "Say text out loud as an audio file", "zh": "把文字朗读成音频文件"},
    "opt_speak_text": {"en": "What to say", "zh": "要朗读的文字"},
    "opt_voice": {"en": "Voice name (optional)", "zh": "声音名称（可选）"},
    "cmd_voice": {"en": "How voice clips are handled here, and whether answers are spoken", "zh": "设置本频道如何处理语音，以及是否朗读回答"},
    "opt_voice_mode": {"en": "transcribe, converse (answer as if typed) or off", "zh": "transcribe（转写）、converse（当作文字回答）或 off（关闭）"},
    "opt_answer_with_voice": {"en": "Also speak chat answers (yes/no)", "zh": "同时朗读聊天回答（是/否）"},
    "audio_unreadable": {"en": "I couldn't read that audio: {reason}.", "zh": "无法读取这段音频：{reason}。"},
    "audio_too_long": {"en": "That recording is {duration} long; the limit is {max_duration}.", "zh": "这段录音长 {duration}，上限为 {max_duration}。"},
    "stt_auth": {"en": "The transcription service rejected our key. An admin needs to check it.", "zh": "转写服务拒绝了密钥，请管理员检查。"},
    "stt_bad_request": {"en": "The transcription service refused the audio ({status}): {detail}", "zh": "转写服务拒绝了这段音频（{status}）：{detail}"},
    "stt_provider_error": {"en": "The transcription service failed ({status}). Please try again later.", "zh": "转写服务出错（{status}），请稍后再试。"},
    "stt_rate_limited": {"en": "The transcription service is busy. Please try again in a minute.", "zh": "转写服务繁忙，请一分钟后再试。"},
    "stt_timeout": {"en": "The transcription service took too long to answer.", "zh": "转写服务响应超时。"},
    "stt_unreachable": {"en": "I couldn't reach the transcription service. Please try again later.", "zh": "无法连接转写服务，请稍后再试。"},
    "tts_empty_text": {"en": "There is no text to speak.", "zh": "没有可朗读的文字。"},
    "tts_text_too_long": {"en": "That text is too long to speak: {length} characters, the limit is {limit}.", "zh": "文字太长，无法朗读：共 {length} 个字符，上限为 {limit}。"},
    "tts_bad_format": {"en": "I can't make {format} audio. Choose one of {formats}.", "zh": "无法生成 {format} 格式的音频，请选择 {formats} 之一。"},
    "tts_auth": {"en": "The speech service rejected its key (status {status}). An admin needs to check the Azure Speech key and region.", "zh": "语音服务拒绝了密钥（状态 {status}）。请管理员检查 Azure 语音服务的密钥和区域。"},
    "tts_rate_limited": {"en": "The speech service is busy. Please try again in a moment.", "zh": "语音服务繁忙，请稍后再试。"},
    "tts_provider_error": {"en": "The speech service failed (status {status}). Please try again later.", "zh": "语音服务出错（状态 {status}），请稍后再试。"},
    "tts_bad_request": {"en": "The speech service refused the request (status {status}): {detail}", "zh": "语音服务拒绝了请求（状态 {status}）：{detail}"},
    "tts_unreachable": {"en": "I couldn't reach the speech service. Please try again later.", "zh": "无法连接语音服务，请稍后再试。"},
    "tts_timeout": {"en": "The speech service took too long to answer.", "zh": "语音服务响应超时。"},
    # files
    "file_too_large": {
        "en": "{name} is larger than the {limit_mb} MB limit.",
        "zh": "{name} 超过了 {limit_mb} MB 的大小限制。",
    },
    "file_empty": {"en": "{name} is empty.", "zh": "{name} 是空文件。"},
    "file_mismatch": {
        "en": "{name} says .{ext} but its content is {found}. Please send the real file.",
        "zh": "{name} 的扩展名是 .{ext}，但内容是 {found}。请发送正确的文件。",
    },
    "upload_missing": {
        "en": "That upload was not found. Please attach the file again.",
        "zh": "找不到该上传文件，请重新添加附件。",
    },
    "file_received": {
        "en": "Received {name} ({size}, {mime}).",
        "zh": "已收到 {name}（{size}，{mime}）。",
    },
    "file_download_failed": {
        "en": "I couldn't download {name}: {reason}.",
        "zh": "无法下载 {name}：{reason}。",
    },
    # core commands
    "cmd_help": {"en": "Show what I can do", "zh": "显示我能做什么"},
    "cmd_help_command": {"en": "A command to explain", "zh": "要查看说明的命令"},
    "cmd_ping": {"en": "Check that I'm alive and how busy I am", "zh": "检查机器人是否在线及繁忙程度"},
    "cmd_whoami": {"en": "Show who I think you are", "zh": "显示你的身份信息"},
    "cmd_reset": {"en": "Start a new conversation", "zh": "开始新的对话"},
    "pong": {
        "en": "Pong! Round trip {total_ms} ms (database {db_ms} ms, queue wait {queue_ms} ms, engine {run_ms} ms).",
        "zh": "Pong！往返 {total_ms} 毫秒（数据库 {db_ms} 毫秒，排队 {queue_ms} 毫秒，引擎 {run_ms} 毫秒）。",
    },
    "whoami": {
        "en": "You are {user} ({user_id}) on {platform}, workspace {workspace}, channel {channel}. "
        "Role: {role}. Language: {locale}.",
        "zh": "你是 {platform} 上的 {user}（{user_id}），工作区 {workspace}，频道 {channel}。"
        "角色：{role}。语言：{locale}。",
    },
    "reset_done": {
        "en": "Started a new conversation. I've set the earlier one aside.",
        "zh": "已开始新的对话，之前的对话已归档。",
    },
    "suggest_help": {"en": "What can you do?", "zh": "你能做什么？"},
    "suggest_ping": {"en": "Are you there?", "zh": "你在吗？"},
    "suggest_whoami": {"en": "Who am I?", "zh": "我是谁？"},
    "progress": {"en": "Working… {percent}% {note}", "zh": "处理中… {percent}% {note}"},
    "queued": {"en": "Queued (#{position}).", "zh": "已排队（第 {position} 位）。"},
}


class Msg(str):
    """A message key used as a parameter of another message; translated when rendered."""


def normalize_locale(locale: str | None) -> str | None:
    """Map a platform locale ('zh-CN', 'en_US', 'zh-TW') to a supported language, or None."""
    if not locale:
        return None
    lang = locale.replace("_", "-").split("-", 1)[0].lower()
    return lang if lang in SUPPORTED else None


def t(key: str, locale: str | None = "en", /, **params: object) -> str:
    """The message `key` in `locale`, falling back to English; params fill its placeholders."""
    entry = MESSAGES[key]
    lang = normalize_locale(locale) or "en"
    filled = {k: t(v, lang) if isinstance(v, Msg) else v for k, v in params.items()}
    return entry.get(lang, entry["en"]).format(**filled)
