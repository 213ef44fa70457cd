#!/usr/bin/env python3
"""Writes tests/data/jinja_cases.json: Jinja snippets and chat templates with
the exact output (or error) of Python's jinja2 configured as the model hubs
render chat templates. A development tool, not run by the test suite (it needs
the jinja2 package); the JSON it writes is what tests/test_template.c checks.

usage: gen_jinja_cases.py TESTDATA_DIR OUT.json

Each case: {"name", "template" | "template_file" (in TESTDATA_DIR/templates),
"vars", and "expected" (the rendering) or "error" (the message) with
"raised": true when the template called raise_exception."""
import json
import os
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """The hubs' {% generation %} block: renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class Raised(Exception):
    pass


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise Raised(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Weather in Paris?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}},
         {"type": "function", "function": {"name": "search", "description": "Search the web, \u00e9t\u00e9",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}
CALL_STR = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
TOOL_TURN = MSGS + [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
                    {"role": "assistant", "content": "It is 21C."}]
TOOL_TURN_STR = MSGS + [{"role": "assistant", "content": None, "tool_calls": [CALL_STR]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "21C"}]
BASE = {"bos_token": "<s>", "eos_token": "</s>"}


def v(**kw):
    d = dict(BASE)
    d.update(kw)
    return d


# (name, template, vars)
SNIPPETS = [
    # whitespace control
    ("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("ws_lstrip", "  {% if true %}\n    x\n  {% endif %}\ny", {}),
    ("ws_minus", "a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("ws_var_minus", "a \n {{- 'x' -}} \n b", {}),
    ("ws_plus", "  {%+ if true %}x{% endif +%}\ny", {}),
    ("ws_comment", "a\n  {# note #}\nb {#- x -#} c", {}),
    ("ws_trailing_newline", "x\n", {}),
    ("ws_crlf", "a\r\nb\rc\r\n", {}),
    ("ws_var_no_trim", "{{ 'a' }}\nb", {}),
    ("ws_raw", "{% raw %}{{ not evaluated }}{% endraw %}|{%- raw -%}  x  {%- endraw -%}|", {}),
    ("ws_lstrip_not_var", "  {{ 'x' }}", {}),
    ("ws_unicode_space", "a\u00a0{%- if true %}b{% endif %}", {}),
    # literals and printing
    ("print_values", "{{ none }} {{ true }} {{ false }} {{ 1 }} {{ -2 }} {{ 1.5 }} {{ 1.0 }} {{ 1e20 }} {{ 1e-5 }} "
     "{{ 0.1 + 0.2 }} {{ 123456789012345678 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }}", {}),
    ("print_containers", "{{ [1, 'a', none, true, 2.5] }} {{ {'k': 'v', 'n': [1]} }} {{ (1,) }} {{ () }} "
     "{{ ('a', 'b') }} {{ [] }} {{ {} }}", {}),
    ("print_repr_quotes", "{{ [\"it's\", 'x\"y', 'a\\nb', 'tab\\tq', '\\\\'] }}", {}),
    ("print_repr_unicode", "{{ ['\u00e9', '\u00a0', '\U0001f999', '\\x01'] }}", {}),
    ("string_escapes", "{{ 'a\\tb\\u00e9\\x41\\101\\'\\\"\\d' }}", {}),
    ("string_concat_literals", "{{ 'a' 'b' \"c\" }}", {}),
    ("numbers", "{{ 0x1f }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 1.5e3 }} {{ 12.5e-1 }}", {}),
    ("dict_items_repr", "{{ {'a': 1}.items() }} {{ {'a': 1}.keys() }} {{ {'a': 1}.values() }}", {}),
    # expressions
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} "
     "{{ 10 / 4 }} {{ 10 / 5 }} {{ 3 * 'ab' }} {{ [1] * 3 }} {{ 1 + 2.5 }} {{ true + 1 }} {{ -7.5 // 2 }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ not true or true }} {{ not (true or true) }} "
     "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1 ~ 2 + 3 }} {{ 'a' ~ none ~ 1 }}", {}),
    ("filter_precedence", "{{ 'x' + '  y  ' | trim + 'z' }} {{ -3 | abs }} {{ 1 + -3 | abs }}", {}),
    ("compare_chain", "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} "
     "{{ true == 1 }} {{ none == none }} {{ 'a' != 'a' }}", {}),
    ("in_operator", "{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} "
     "{{ 'x' in undefined_thing }}", {}),
    ("and_or_values", "{{ 0 or 'b' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ none or none }}|", {}),
    ("cond_expr", "{{ 'y' if true else 'n' }} {{ 'y' if false else 'n' }} [{{ 'y' if false }}] "
     "{{ 'a' if false else 'b' if true else 'c' }}", {}),
    ("subscripts", "{{ [1, 2, 3][-1] }} {{ 'hello'[1] }} {{ 'héllo'[1] }} {{ [1, 2, 3][1:] }} {{ 'abcdef'[::2] }} "
     "{{ 'abc'[::-1] }} {{ [1, 2, 3, 4][-2:] }} {{ 'héllo wörld'[2:8] }} {{ [1, 2][5:] }} {{ x.0 }}",
     {"x": ["first"]}),
    ("attr_item", "{{ d.a }} {{ d['a'] }} {{ d.items is callable }} {{ d['items'] }} {{ d.missing }}|{{ d['b'].c }}",
     {"d": {"a": 1, "items": "I", "b": {"c": 2}}}),
    ("attr_dotted", "{{ m.content }} {{ m['role'] }} {{ m.tool_calls }}|", {"m": {"role": "user", "content": "x"}}),
    ("tuple_unpack", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% for k, v in [('x', 1), ('y', 2)] %}{{ k }}={{ v }};"
     "{% endfor %}", {}),
    ("list_literal_trailing", "{{ [1, 2,] }} {{ {'a': 1,} }}", {}),
    # statements
    ("if_elif", "{% for i in range(4) %}{% if i == 0 %}zero{% elif i == 1 %}one{% elif i == 2 %}two"
     "{% else %}many{% endif %} {% endfor %}", {}),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {}),
    ("for_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", {}),
    ("for_cycle_changed", "{% for x in [1, 1, 2, 3, 3] %}{{ loop.cycle('a', 'b') }}{{ loop.changed(x) }} "
     "{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in [1] %}{{ x }}{% else %}no{% endfor %}",
     {}),
    ("for_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ '' if loop.last else ',' }}{% endfor %}", {}),
    ("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}"
     "{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("for_dict", "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %} {% for k, v in {'b': 1, 'a': 2}.items() %}"
     "{{ k }}{{ v }}{% endfor %}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}"
     "{{ loop.index }}{% endfor %}", {}),
    ("for_recursive", "{% for item in tree recursive %}{{ item.name }}{% if item.children %}[{{ loop(item.children) }}]"
     "{% endif %}{{ loop.depth }}{% endfor %}",
     {"tree": [{"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}, {"name": "d"}]}),
    ("scope_for_set", "{% set x = 1 %}{% for i in range(2) %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("scope_if_set", "{% if true %}{% set x = 5 %}{% endif %}{{ x }}", {}),
    ("namespace", "{% set ns = namespace(n=0, items=[]) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
     "{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.n }} {{ ns.items }} {{ ns.missing }}|", {}),
    ("namespace_dict_arg", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("set_block", "{% set body %}\n  hello {{ 'x' }}\n{% endset %}[{{ body }}]{% set t | trim | upper %}  ab  "
     "{% endset %}[{{ t }}]", {}),
    ("macro_basic", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} "
     "{{ greet('B', '?') }} {{ greet(punct='.', name='C') }} {{ greet() }}|", {}),
    ("macro_varargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}", {}),
    ("macro_defaults_ref", "{% macro m(a, b=a * 2) %}{{ a }},{{ b }}{% endmacro %}{{ m(3) }}", {}),
    ("macro_recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}"
     "{% endmacro %}{{ fact(5) }}", {}),
    ("macro_closure", "{% set g = 'G' %}{% macro m() %}{{ g }}{{ later }}{% endmacro %}{% set later = 'L' %}{{ m() }}",
     {}),
    ("macro_json_schema", "{% macro render(s, depth) %}{% if s.type == 'object' %}{{ '{' }}"
     "{% for k, v in s.properties.items() %}{{ k }}: {{ render(v, depth + 1) }}{% if not loop.last %}, {% endif %}"
     "{% endfor %}{{ '}' }}{% elif s.type == 'array' %}{{ render(s['items'], depth + 1) }}[]{% else %}{{ s.type }}"
     "{% endif %}{% endmacro %}{{ render(schema, 0) }}",
     {"schema": {"type": "object", "properties": {
         "a": {"type": "string"},
         "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "integer"}}}}}}}),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}"
     "{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("call_block_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}"
     "{% call(item) each([1, 2]) %}[{{ item }}]{% endcall %}", {}),
    ("filter_block", "{% filter upper %}hello {{ 'world' }}{% endfilter %}", {}),
    ("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }}|", {}),
    ("print_stmt", "{% print 'a', 1 %}", {}),
    ("generation_block", "x{% generation %}gen {{ 1 }}{% endgeneration %}y", {}),
    ("block_inline", "a{% block b %}in block{% endblock %}c", {}),
    # filters
    ("f_trim_etc", "[{{ '  a b  ' | trim }}] [{{ 'xxaxx' | trim('x') }}] [{{ '\u3000x\u00a0' | trim }}] "
     "{{ 'AbC' | lower }} {{ 'abc' | upper }} {{ 'hello world' | capitalize }} {{ 'hello-world foo(bar' | title }}",
     {}),
    ("f_length_count", "{{ [1, 2] | length }} {{ 'héllo' | length }} {{ {'a': 1} | count }} {{ undef | length }}", {}),
    ("f_default", "{{ undef | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} "
     "{{ 0 | d('z', boolean=true) }} {{ 'v' | default('d') }}", {}),
    ("f_join", "{{ [1, 2, 3] | join(', ') }} {{ ['a', 'b'] | join }} {{ users | join(', ', attribute='name') }}",
     {"users": [{"name": "x"}, {"name": "y"}]}),
    ("f_items", "{% for k, v in {'b': 1, 'a': 2} | items %}{{ k }}{{ v }}{% endfor %} {{ undef | items | list }}",
     {}),
    ("f_tojson", "{{ 'x' | tojson }} {{ {'a': [1, 2.0, none, true, 'é\\n\\u0001\"\\\\']} | tojson }} "
     "{{ {'a': [1, {}], 'b': []} | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} "
     "{{ [1, 2] | tojson(separators=(',', ':')) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ 1e100 | tojson }}", {}),
    ("f_tojson_tools", "{% for t in tools %}{{ t | tojson }}\n{{ t | tojson(indent=4) }}\n{% endfor %}",
     {"tools": TOOLS}),
    ("f_list_first_last", "{{ 'abc' | list }} {{ [3, 1] | first }} {{ [3, 1] | last }} {{ {'k': 1} | list }} "
     "{{ [] | first }}|", {}),
    ("f_sort", "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a', 'C'] | sort }} {{ ['b', 'A', 'a'] | sort(case_sensitive=true) }} "
     "{{ [3, 1, 2] | sort(reverse=true) }} {{ users | sort(attribute='age') | map(attribute='name') | list }}",
     {"users": [{"name": "x", "age": 30}, {"name": "y", "age": 20}, {"name": "z", "age": 30}]}),
    ("f_dictsort", "{{ {'b': 1, 'A': 3, 'a': 2} | dictsort }} {{ {'b': 1, 'a': 2} | dictsort(by='value') }} "
     "{{ {'b': 1, 'a': 2} | dictsort(reverse=true) }}", {}),
    ("f_unique", "{{ ['b', 'A', 'a', 'b'] | unique | list }} {{ [1, 2, 1] | unique | list }}", {}),
    ("f_minmax_sum", "{{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ ['b', 'A'] | max }} {{ [1, 2.5] | sum }} "
     "{{ xs | sum(attribute='v') }} {{ [] | max }}|", {"xs": [{"v": 1}, {"v": 2}]}),
    ("f_map_select", "{{ ['a', 'b'] | map('upper') | list }} {{ [1, 2, 3, 4] | select('odd') | list }} "
     "{{ [1, 2, 3, 4] | reject('odd') | list }} {{ users | selectattr('admin') | map(attribute='name') | list }} "
     "{{ users | rejectattr('admin') | map(attribute='name') | join }} "
     "{{ users | selectattr('name', 'equalto', 'y') | list | length }} {{ ['a', 'code_interpreter'] | "
     "reject('equalto', 'code_interpreter') | join(', ') }} {{ [0, 1, none, ''] | select | list }}",
     {"users": [{"name": "x", "admin": True}, {"name": "y", "admin": False}]}),
    ("f_map_default", "{{ users | map(attribute='nick', default='?') | list }}", {"users": [{"nick": "a"}, {}]}),
    ("f_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}",
     {}),
    ("f_reverse", "{{ 'abc' | reverse }} {{ [1, 2, 3] | reverse | list }}", {}),
    ("f_int_float", "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} "
     "{{ '0x1A' | int(0, 16) }} {{ '3.5' | float }} {{ 'x' | float }} {{ 2 | float }} {{ ' 12 ' | int }}", {}),
    ("f_round_abs", "{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 2.1 | round(method='ceil') }} "
     "{{ 2.9 | round(method='floor') }} {{ -3 | abs }} {{ -2.5 | abs }} {{ 7 | round }}", {}),
    ("f_string_safe_escape", "{{ 1 | string }} {{ '<a href=\"x\">&\\'</a>' | e }} {{ '<b>' | safe }} "
     "{{ [1] | string }}", {}),
    ("f_indent", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb\\n' | indent(2, blank=true) }}|"
     "{{ 'x\\ny' | indent('> ') }}", {}),
    ("f_center_truncate_wordcount", "[{{ 'ab' | center(7) }}] {{ 'hello world, this is long' | truncate(12) }} "
     "{{ 'hello world, this is long' | truncate(12, true) }} {{ 'short' | truncate(12) }} "
     "{{ 'one two  three' | wordcount }}", {}),
    ("f_batch_format", "{{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ [1, 2, 3] | batch(2, 'x') | list }} "
     "{{ '%s is %d' | format('x', 3) }} {{ '%(a)s-%(b)05.1f' | format(a='A', b=2.25) }}", {}),
    ("f_attr", "{{ d | attr('items') is callable }} {{ d | attr('x') }}|", {"d": {"x": 1}}),
    # tests
    ("tests_types", "{{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1 is integer }} "
     "{{ 1.0 is float }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} "
     "{{ 1 is iterable }} {{ none is none }} {{ true is boolean }} {{ false is false }} {{ true is true }} "
     "{{ undef is defined }} {{ undef is undefined }} {{ range is callable }}", {}),
    ("tests_numbers", "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} "
     "{{ 2 is eq 2 }} {{ 2 is ne 3 }} {{ 1 is lt 2 }} {{ 2 is le 2 }} {{ 3 is gt 2 }} {{ 3 is ge 4 }} "
     "{{ 2 is equalto 2 }} {{ 1 is in [1, 2] }} {{ 'abc' is lower }} {{ 'ABC' is upper }}", {}),
    ("tests_not", "{{ x is not defined }} {{ not x is defined }} {{ none is not none }} {{ 'upper' is filter }} "
     "{{ 'odd' is test }} {{ 'nope' is filter }} {{ none is sameas none }}", {}),
    # str methods
    ("m_split", "{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} "
     "{{ 'a b c'.rsplit(' ', 1) }} {{ '  a  b  c  '.split(None, 1) }} {{ '  a  b  c  '.rsplit(None, 1) }} "
     "{{ 'x</think>y</think>z'.split('</think>')[-1] }} {{ 'l1\\nl2\\r\\nl3'.splitlines() }}", {}),
    ("m_strip", "[{{ '  x  '.strip() }}] [{{ '  x  '.lstrip() }}] [{{ '  x  '.rstrip() }}] [{{ 'xyx'.strip('x') }}]",
     {}),
    ("m_case", "{{ 'hello wORLD'.title() }} {{ 'hello'.capitalize() }} {{ 'AbC'.swapcase() }} {{ 'straße'.upper() }} "
     "{{ 'ÀÉÎ'.lower() }} {{ \"they're\".title() }}", {}),
    ("m_find", "{{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ 'héllo'.find('l') }} "
     "{{ 'hello'.count('l') }} {{ 'hello'.index('e') }} {{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} "
     "{{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.startswith('l', 2) }}", {}),
    ("m_misc", "{{ '-'.join(['a', 'b']) }} {{ 'a{}b{}'.format(1, 2) }} {{ '{0}{0}{x}'.format('r', x='X') }} "
     "{{ 'k=v=w'.partition('=') }} {{ 'k=v=w'.rpartition('=') }} {{ 'prefix_x'.removeprefix('prefix_') }} "
     "{{ 'x.txt'.removesuffix('.txt') }} [{{ 'ab'.ljust(4) }}] [{{ 'ab'.rjust(4, '*') }}] {{ '42'.zfill(5) }} "
     "{{ '-42'.zfill(5) }} {{ 'abc'.replace('b', 'B') }} {{ 'ab12'.isalnum() }} {{ '12'.isdigit() }} "
     "{{ ' '.isspace() }} {{ 'ab'.isalpha() }} {{ 'ab'.islower() }} {{ 'AB'.isupper() }} {{ ''.isdigit() }}", {}),
    ("m_dict", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys() | list }} {{ d.values() | list }} "
     "{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}", {"d": {"a": 1, "b": 2}}),
    ("m_list", "{{ [1, 2, 1].count(1) }} {{ [1, 2].index(2) }}", {}),
    # globals
    ("g_range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} "
     "{{ range(0) | list }}", {}),
    ("g_dict_joiner_cycler", "{{ dict(a=1, b=2) }} {% set j = joiner(' | ') %}{% for x in 'abc' %}{{ j() }}{{ x }}"
     "{% endfor %} {% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }}", {}),
    ("g_strftime_fixed_var", "{{ date_string }}", {"date_string": "26 Jul 2024"}),
    # unicode content
    ("unicode_content", "{{ s }}|{{ s | length }}|{{ s[0] }}|{{ s | upper }}|{{ s | tojson }}",
     {"s": "\u00dcbergr\u00f6\u00dfentr\u00e4ger \U0001f999 \u65e5\u672c"}),
    ("unicode_template", "日本{{ '語' }}\U0001f999{% if true %}ü{% endif %}", {}),
    # variables from JSON
    ("json_values", "{{ v.i }} {{ v.f }} {{ v.b }} {{ v.n }} {{ v.l }} {{ v.d }} {{ v.s }} {{ v | tojson }}",
     {"v": {"i": 3, "f": 2.5, "b": True, "n": None, "l": [1, "x"], "d": {"k": [True]}, "s": "q\"uote"}}),
    ("add_generation_prompt_missing", "{% if add_generation_prompt %}yes{% else %}no{% endif %}", {}),
    # patterns of popular chat templates (written for these tests)
    ("pattern_last_query", """{%- set ns = namespace(multi=true, last=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi and message.role == "user" and message.content is string and not (message.content.startswith('<r>') and message.content.endswith('</r>')) %}
        {%- set ns.multi = false %}
        {%- set ns.last = index %}
    {%- endif %}
{%- endfor %}
last={{ ns.last }}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if '</think>' in content %}
        {%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
[{{ reasoning }}]
    {%- endif %}
{{ message.role }}: {{ content }}
{%- endfor %}
""", {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>\nwhy\n</think>\n\nA1"},
                   {"role": "user", "content": "<r>tool</r>"}, {"role": "assistant", "content": None}]}),
    ("pattern_content_parts", """{%- for message in messages %}
{%- if message.content is string %}{{ message.content }}
{%- else %}{% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% elif part.type == 'image' %}<image>{% endif %}{% endfor %}
{%- endif %}|{{ message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('+') if message.content is not string else '' }}
{% endfor %}""", {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"},
                                                              {"type": "text", "text": "here"}]},
                                {"role": "assistant", "content": "ok"}]}),
    ("pattern_alternation_ok", "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Roles must alternate') }}{% endif %}{{ m.role[0] }}{% endfor %}",
     {"messages": MSGS[1:]}),
    ("pattern_alternation_err", "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Roles must alternate') }}{% endif %}{{ m.role[0] }}{% endfor %}",
     {"messages": MSGS}),
    ("pattern_schema_types", """{%- macro py_type(spec) %}
{%- set m = {"string": "str", "number": "float", "integer": "int", "boolean": "bool"} %}
{%- if spec.type is not defined %}Any
{%- elif spec.type in m.keys() %}{{ m[spec.type] }}
{%- elif spec.type == "array" %}list[{{ py_type(spec['items']) }}]
{%- elif spec.type == "object" %}dict
{%- else %}Any{%- endif %}
{%- endmacro %}
{%- for tool in tools %}
def {{ tool.function.name }}(
{%- for name, p in tool.function.parameters.properties | dictsort %}{{ name }}: {{ py_type(p) }}{{ ", " if not loop.last }}{% endfor %}):
    \"\"\"{{ tool.function.description | trim }}\"\"\"
{% endfor %}""", {"tools": TOOLS + [{"type": "function", "function": {
        "name": "f", "description": " many ", "parameters": {"type": "object", "properties": {
            "xs": {"type": "array", "items": {"type": "integer"}}, "o": {"type": "object"}, "u": {}}}}}]}),
    ("pattern_last_user", "{{ (messages | selectattr('role', 'equalto', 'user') | list | last).content }} "
     "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ '=' * 5 }} {{ '%.2f' | format(3.14159) }}",
     {"messages": MSGS}),
    ("pattern_indented_blocks", """<s>
{%- for m in messages %}
    {%- if m.role == 'system' %}
        {{- '[SYS]' + m.content }}
    {%- elif m.role == 'user' %}
        {%- if loop.index is divisibleby 2 %}
    [U{{ loop.index }}] {{ m.content -}}
        {%- else %}
            {{ m.content }}
        {% endif %}
    {%- else %}
  {{ m.content }}
    {%- endif -%}
{% endfor %}
</s>
""", {"messages": MSGS}),
    ("pattern_tool_call_ids", "{%- for m in messages %}{%- if m.tool_calls is defined and m.tool_calls %}"
     "{%- for tc in m.tool_calls %}{%- if tc.id is not defined or tc.id | length != 9 %}"
     "{{- 'bad id:' ~ tc.id ~ ';' }}{%- else %}{{- tc.id ~ ';' }}{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}",
     {"messages": TOOL_TURN + [{"role": "assistant", "tool_calls": [{"id": "abcdefghi"}]}]}),
    ("pattern_system_default", "{%- if messages[0].role == 'system' %}{%- set sys = messages[0].content %}"
     "{%- set loop_messages = messages[1:] %}{%- else %}{%- set sys = 'default' %}{%- set loop_messages = messages %}"
     "{%- endif %}{{ sys }}{% for m in loop_messages %}|{{ m.role }}{% endfor %}", {"messages": MSGS[1:]}),
    # errors
    ("err_raise", "{{ raise_exception('Custom failure: ' ~ 3) }}", {}),
    ("err_raise_in_macro", "{% macro m() %}{{ raise_exception('from macro') }}{% endmacro %}a{{ m() }}", {}),
    ("err_undefined_attr", "{{ foo.bar }}", {}),
    ("err_undefined_chain", "{{ d.a.b }}", {"d": {}}),
    ("err_list_element", "{{ messages[0]['role'] }}", {"messages": []}),
    ("err_add_types", "{{ 'a' + 1 }}", {}),
    ("err_add_types2", "{{ 1 + 'a' }}", {}),
    ("err_div_zero", "{{ 1 / 0 }}", {}),
    ("err_floordiv_zero", "{{ 1 // 0 }}", {}),
    ("err_unsafe_append", "{{ [1].append(2) }}", {}),
    ("err_range_big", "{{ range(200000) | length }}", {}),
    ("err_ns_assign", "{% set x = 1 %}{% set x.y = 2 %}", {}),
    ("err_unpack", "{% for a, b in [(1, 2, 3)] %}{% endfor %}", {}),
    ("err_items_nonmapping", "{{ [1] | items | list }}", {}),
    ("err_undefined_plus", "{{ undef + 1 }}", {}),
    ("err_compare", "{{ 1 < 'a' }}", {}),
    ("err_not_iterable", "{% for x in 5 %}{% endfor %}", {}),
    ("err_none_iter", "{% for x in none %}{% endfor %}", {}),
    ("err_call_undefined", "{{ nothing() }}", {}),
    ("err_in_int", "{{ 1 in 2 }}", {}),
    ("err_syntax_unclosed", "{% if true %}x", {}),
    ("err_syntax_unknown_tag", "{% frobnicate %}", {}),
    ("err_syntax_bad_expr", "{{ 1 + }}", {}),
    ("err_syntax_unclosed_var", "{{ x ", {}),
    ("err_syntax_comment", "{# never closed", {}),
    ("err_syntax_expected", "{{ x y }}", {}),
    ("err_syntax_nesting", "{% for x in y %}{% if x %}{% endfor %}", {}),
    ("err_syntax_unknown_in_block", "{% if x %}{% else %}{% else %}{% endif %}", {}),
    ("err_syntax_bracket", "{{ (1 }}", {}),
    ("err_syntax_filter_name", "{{ x | }}", {}),
    ("err_syntax_call_args", "{{ f(a=1, 2) }}", {}),
]

# Real templates (testdata) with variables the reference cases do not use.
FILE_CASES = [
    ("qwen_tools", "Qwen-Qwen2.5-7B-Instruct.jinja", v(messages=TOOL_TURN, tools=TOOLS, add_generation_prompt=True)),
    ("qwen_tools_no_system", "Qwen-Qwen2.5-7B-Instruct.jinja",
     v(messages=MSGS[1:], tools=TOOLS, add_generation_prompt=True)),
    ("qwen_tool_str_args", "Qwen-Qwen2.5-7B-Instruct.jinja",
     v(messages=TOOL_TURN_STR, add_generation_prompt=False)),
    ("llama31_tools", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=TOOL_TURN, tools=TOOLS, add_generation_prompt=True)),
    ("llama31_tools_system_side", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=TOOL_TURN, tools=TOOLS, tools_in_user_message=False, add_generation_prompt=True)),
    ("llama31_builtin_tools", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=MSGS + [{"role": "assistant", "tool_calls": [{"function": {"name": "brave_search",
                                                                          "arguments": {"query": "weather"}}}]},
                        {"role": "ipython", "content": {"result": "sunny"}}],
       builtin_tools=["brave_search", "code_interpreter"], add_generation_prompt=True)),
    ("llama31_date", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=MSGS, date_string="01 Jan 2025", add_generation_prompt=True)),
    ("llama31_two_calls", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=MSGS + [{"role": "assistant", "tool_calls": [CALL, CALL]}], add_generation_prompt=False)),
    ("llama31_tools_no_user", "meta-llama-Llama-3.1-8B-Instruct.jinja",
     v(messages=[{"role": "system", "content": "s"}], tools=TOOLS, add_generation_prompt=True)),
    ("deepseek_tools", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
     v(messages=MSGS + [{"role": "assistant", "content": None, "tool_calls": [CALL_STR, CALL_STR]},
                        {"role": "tool", "content": "21C"}, {"role": "tool", "content": "22C"},
                        {"role": "assistant", "content": "Warm."}], add_generation_prompt=True)),
    ("deepseek_think", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
     v(messages=MSGS[1:] + [{"role": "assistant", "content": "<think>\nhmm\n</think>\n\nAnswer."},
                            {"role": "user", "content": "More?"}], add_generation_prompt=True)),
    ("deepseek_no_agp", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", v(messages=MSGS)),
    ("gemma_alternation", "google-gemma-2-2b-it.jinja",
     v(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], add_generation_prompt=True)),
    ("gemma_trim", "google-gemma-2-2b-it.jinja",
     v(messages=[{"role": "user", "content": "  spaced \n"}, {"role": "assistant", "content": "\tok "}],
       add_generation_prompt=False)),
    ("phi_empty_system", "microsoft-Phi-3.5-mini-instruct.jinja",
     v(messages=[{"role": "system", "content": ""}] + MSGS[1:], add_generation_prompt=True)),
    ("command_r_tools", "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
     v(messages=TOOL_TURN, tools=TOOLS, add_generation_prompt=True)),
    ("command_r_documents", "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
     v(messages=MSGS, documents=[{"title": "Doc A", "text": "alpha"}, {"title": "Doc B", "text": "b\u00e9ta"}],
       add_generation_prompt=True, enable_citations=True)),
    ("command_r_two_tool_results", "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
     v(messages=MSGS + [{"role": "assistant", "tool_plan": "I will call two.",
                         "tool_calls": [CALL, dict(CALL, id="call_2")]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
                        {"role": "tool", "tool_call_id": "call_2", "content": "r2"},
                        {"role": "user", "content": "thanks"}], tools=TOOLS, add_generation_prompt=True)),
]


def render(env, src, variables):
    try:
        return {"expected": env.from_string(src).render(**variables)}
    except Raised as e:
        return {"error": str(e), "raised": True}
    except Exception as e:  # noqa: BLE001 -- every jinja2 failure is a case
        return {"error": str(e)}


def main():
    testdata, out = sys.argv[1], sys.argv[2]
    env = environment()
    cases = []
    for name, src, variables in SNIPPETS:
        case = {"name": name, "template": src, "vars": variables}
        case.update(render(env, src, variables))
        cases.append(case)
    for name, fname, variables in FILE_CASES:
        with open(os.path.join(testdata, "templates", fname), encoding="utf-8") as f:
            src = f.read()
        case = {"name": name, "template_file": fname, "vars": variables}
        case.update(render(env, src, variables))
        cases.append(case)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/gen_jinja_cases.py", "jinja2": jinja2.__version__, "cases": cases}, f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    print("%d cases -> %s" % (len(cases), out))


if __name__ == "__main__":
    main()
