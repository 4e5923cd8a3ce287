"""Chat templates for the tests: real models' own (rendered exactly as transformers renders them), and hostile
ones (what a downloaded checkpoint could carry), each hostile one named by what it tries."""

# ruff: noqa: E501 (the models' templates as they publish them, long lines and all)

from __future__ import annotations

# Llama 3.1 Instruct's, tools and all.
LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
# Mistral Instruct v0.2's: a system message folded into the first user turn, roles checked.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}"
    "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}{%- else %}"
    "{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token}}{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}"
    "{%- endif %}{%- endfor %}"
)
# Qwen2.5 Instruct's, tool calls and responses included.
QWEN25_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif %}"
    '{{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query." }}'
    '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}{{- "\\n<|im_end|>\\n" }}'
    "{%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == \"assistant\" %}{{- '<|im_start|>' + message.role }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}{%- elif message.role == \"tool\" %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}{{- '<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Zephyr's, newline-heavy (trim_blocks matters).
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
# Phi-3's.
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}"
)

# What a template could do with what a policy writes. Each renders nothing useful; "please" in a response
# sets some off, as a gaming policy's output would.
HOSTILE_TEMPLATES = {
    "nested loops over ranges": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "nested loops over a list": (
        "{% set r = range(99999)|list %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}"
        "{% endfor %}"
    ),
    "a huge range": "{% for i in range(10**12) %}x{% endfor %}",
    "string repetition": "{{ 'a' * 300000000 }}",
    "list repetition": "{{ (['a'] * 300000000)|length }}",
    "doubling a string with ~": (
        "{% set ns = namespace(x=messages[-1].content) %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}{{ ns.x }}"
    ),
    "doubling a string with +": (
        "{% set ns = namespace(x=messages[-1].content) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}"
        "{% endfor %}{{ ns.x }}"
    ),
    "keeping a copy per iteration": (
        "{% set ns = namespace(l=[]) %}{% for i in range(99999) %}"
        "{% set ns.l = ns.l + [messages[-1].content ~ i] %}{% endfor %}"
    ),
    "recursion on a word": (
        "{% macro f() %}{{ f() }}{% endmacro %}{% for m in messages %}{% if 'please' in m.content %}{{ f() }}"
        "{% endif %}{{ m.content }}{% endfor %}"
    ),
    "exponential recursion": (
        "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}"
    ),
    "looping on a word": (
        "{% for m in messages %}{% if 'please' in m.content %}{% for i in range(99999) %}{% for j in range(99999) %}"
        "{% endfor %}{% endfor %}{% endif %}{{ m.content }}{% endfor %}"
    ),
    "a join of copies": "{{ range(99999)|map('string')|map('center', 1000)|join }}",
    "a join of one text many times": "{{ ([messages[-1].content] * 99999)|join }}",
    "str.join of one text many times": "{{ messages[-1].content.join(range(99999)|map('string')) }}",
    "centering in a huge width": "{{ 'x'|center(1000000000) }}",
    "a huge format width": "{{ '%1000000000s'|format('x') }}",
    "a width from the arguments": "{{ '%*s' % (1000000000, 'x') }}",
    "a huge str.format width": "{{ '{:>1000000000}'.format('x') }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "replacing with a long text": "{{ messages[-1].content|replace('e', 'b' * 100000) }}",
    "indenting every line": "{{ ('\n' * 60000)|indent(1000) }}",
    "tabs expanded": "{{ ('\t' * 60000).expandtabs(1000) }}",
    "wrapping with a long string": "{{ messages[-1].content|wordwrap(1, true, '\n' * 100000) }}",
    "a huge JSON indent": "{{ messages|tojson(indent=100000000) }}",
    "huge batches": "{{ [1]|batch(1000000000, 0)|list }}",
    "a sum of lists": "{{ (range(3000)|map('string')|map('list')|list)|sum(start=[])|length }}",
    "a huge integer": "{{ 2 ** 100000000 }}",
    "squaring an integer": (
        "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}"
    ),
    "printing a list every iteration": "{% set r = range(99999)|list %}{% for i in r %}{{ r }}{% endfor %}",
    "constant text in nested loops": (
        "{% for i in range(99999) %}{% for j in range(99999) %}" + "x" * 1000 + "{% endfor %}{% endfor %}"
    ),
    "a block set in nested loops": (
        "{% set x %}{% for i in range(99999) %}{% for j in range(99999) %}{{ messages[-1].content }}{% endfor %}"
        "{% endfor %}{% endset %}{{ x|length }}"
    ),
    "printing a dict view every iteration": (
        "{% set d = dict(a=messages[-1].content) %}{% for i in range(99999) %}{{ d.items() }}{% endfor %}"
    ),
    "a TypeError on a word": (
        "{% for m in messages %}{% if 'please' in m.content %}{{ m.content + 1 }}{% endif %}{{ m.content }}{% endfor %}"
    ),
}
