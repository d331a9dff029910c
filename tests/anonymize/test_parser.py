"""The DicomEdit 6 parser: every construct of the subset, and one-line errors for the rest."""

from __future__ import annotations

import pytest

from xnatio.anonymize import Anonymizer, Script, ScriptError
from xnatio.anonymize.nodes import (
    Assign,
    Call,
    Compare,
    Conditional,
    Delete,
    Describe,
    Echo,
    IfChain,
    Initialize,
    RemoveAllPrivate,
)

V = 'version "6.1"\n'
L2 = "t.das, line 2, column "


def parse(body: str) -> Script:
    return Script.parse(V + body, source="t.das")


XNAT = {"project": "P", "subject": "S", "session": "E"}


def error(text: str, variables: dict[str, str] = XNAT) -> str:
    """The message of compiling ``text`` and binding XNAT's variables (as an upload would)."""
    with pytest.raises(ScriptError) as info:
        Anonymizer([Script.parse(text, source="t.das")], variables)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_xnat_default_site_script_compiles_to_three_statements() -> None:
    script = parse(
        "//\n// Default XNAT anonymization script\n//\n"
        'project != "Unassigned" ? (0008,1030) := project\n'
        "(0010,0010) := subject\n(0010,0020) := session\n"
    )
    first, second, third = script.statements
    assert isinstance(first, Conditional)
    assert isinstance(first.condition, Compare) and first.condition.op == "!="
    assert isinstance(first.then, Assign) and first.then.path.text == "(0008,1030)"
    assert isinstance(second, Assign) and second.path.last.tag == 0x00100010
    assert isinstance(third, Assign) and third.line == 7
    assert set(script.free_variables) == {"project", "subject", "session"}


def test_every_statement_form() -> None:
    script = parse(
        'describe who "Who is it"\n'
        'who := "x"\n'
        "-(0010,1000)\n"
        "- (0010,1001)\n"
        "(0010,1040) ?= who\n"
        "removeAllPrivateTags\n"
        'echo "hello"\n'
        "echo\n"
        "hashUIDList[(0020,000D)]\n"
        'isPresent[(0010,0030)] ? -(0010,0030) : (0010,0030) := ""\n'
        'if ((0008,0060) = "MR") {\n  -(0008,0080)\n} elseif ((0008,0060) ~ "C.") {\n'
        "} else\n{\n  echo who\n}\n"
    )
    kinds = [type(s) for s in script.statements]
    assert kinds == [
        Describe, Initialize, Delete, Delete, Assign, RemoveAllPrivate, Echo, Echo,
        type(script.statements[8]), Conditional, IfChain,
    ]  # fmt: skip
    assign = script.statements[4]
    assert isinstance(assign, Assign) and assign.if_exists
    chain = script.statements[10]
    assert isinstance(chain, IfChain) and len(chain.branches) == 3 and chain.branches[2][0] is None
    assert script.free_variables == {}


def test_tag_forms() -> None:
    script = parse(
        "-(0019,{SIEMENS MR HEADER}XX)\n"
        "-(0029,{SIEMENS CSA HEADER}10)\n"
        "-(XXX#,XXXX)\n"
        "-(50XX,XXXX)\n"
        "-(60x@,3000)\n"
        "-(0008,1140)[1]/(0008,1155)\n"
        "-(0008,1140)[%]/(0008,1155)\n"
        "-*/(0010,0010)\n"
        "-+/(0010,0010)\n"
        "-./(0010,0010)\n"
        "-(0040,0275)/*/(0040,0009)\n"
    )
    paths = [s.path for s in script.statements if isinstance(s, Delete)]
    assert paths[0].last.creator == "SIEMENS MR HEADER" and paths[0].last.element == "XX"
    assert paths[2].last.matches(0x00191008) and not paths[2].last.matches(0x00100010)
    assert paths[3].last.matches(0x50020030) and not paths[3].last.matches(0x60000030)
    assert paths[4].last.matches(0x60023000) and not paths[4].last.matches(0x60013000)
    assert paths[5].steps[0].item == 1 and paths[6].steps[0].item == "%"
    assert [p.steps[0].wildcard for p in paths[7:10]] == ["*", "+", "."]
    assert paths[10].text == "(0040,0275)/*/(0040,0009)"


def test_functions_and_lists() -> None:
    script = parse(
        'a := format["{0}-{1}", subject, {session, "x"}]\n'
        'b := substring[lowercase[uppercase[replace["AbC", "b", "x"]]], 0, 2]\n'
        'c := match[(0010,0010), "(\\\\w+)\\\\^", 1]\n'
        "d := concatenate[a, b, c]\n"
        "e := newUID[]\n"
        'f := mapUID[(0020,000D), "1.2.3"]\n'
        'g := shiftDateTimeByIncrement[(0008,0020), 86400, "seconds"]\n'
        "true[] ? echo e : echo f\n"
    )
    first = script.statements[0]
    assert isinstance(first, Initialize) and isinstance(first.value, Call)
    third = script.statements[2]
    assert isinstance(third, Initialize) and isinstance(third.value, Call)
    pattern = third.value.args[1]
    assert getattr(pattern, "value", None) == "(\\w+)\\^"  # "\\\\" in a script is one backslash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.das: the script is empty"),
        ("// only a comment\n\n", "t.das: the script is empty"),
        (
            "(0010,0010) := subject\n",
            "t.das: no version line (DicomEdit 4 scripts are not supported)",
        ),
        ('version := "6.1"\n', 't.das: no version line (write it as: version "6.1")'),
        (
            'version "5.0"\n',
            "t.das, line 1, column 9: unsupported version '5.0' (supported: 6.0, 6.1, "
            "6.2, 6.3, 6.4, 6.5, 6.6, 6.7)",
        ),
        (
            V + "(0010,0010) := \n",
            L2 + "16: expected a value, found the end of the line",
        ),
        (
            V + '(0010,0010) = "x"\n',
            L2 + "18: expected '?', found the end of the line",
        ),
        (V + "(0010,0010) := foo[1]\n", L2 + "16: unknown function foo[]"),
        (
            V + 'x := getURL["http://h/"]\n',
            L2 + "6: function getURL[] is not supported by xnatio (it calls a web service)",
        ),
        (
            V + 'alterPixels["rectangle", "l=1, t=1, r=2, b=2", "solid", "v=100"]\n',
            L2 + "1: function alterPixels[] is not supported by xnatio (xnatio never "
            "changes pixel data)",
        ),
        (V + "x := lowercase[]\n", L2 + "6: lowercase[] takes 1 arguments, not 0"),
        (V + "(0010,0010) := nobody\n", L2 + "16: unknown variable 'nobody'"),
        (V + '(0010,001) := "x"\n', L2 + "1: bad tag (0010,001)"),
        (
            V + '(0010,0003) := "x"\n',
            L2 + "1: unknown tag (0010,0003): not in the DICOM dictionary",
        ),
        (V + "-(9998,0010)\n", L2 + "2: unknown tag (9998,0010): not in the DICOM dictionary"),
        (V + '(0010,00G0) := "x"\n', L2 + "1: bad tag (0010,00G0)"),
        (
            V + '(0010,0010) := "open\n',
            L2 + "16: unterminated string or bad escape in string",
        ),
        (
            V + '(0010,0010) := "\\d"\n',
            L2 + "16: unterminated string or bad escape in string",
        ),
        (
            V + '(0010,0010) ~ "[" ? -(0010,0010)\n',
            L2 + "13: bad regular expression '[': unterminated character set at position 0",
        ),
        (
            V + '(0002,0003) := "1.2"\n',
            L2 + "1: the file meta group (0002,xxxx) cannot be edited; it follows the data set",
        ),
        (
            V + 'export foo "field"\n',
            L2 + "1: 'export' (to an XNAT field) is not supported by xnatio",
        ),
        (
            V + 'if ((0008,0060) = "MR") {\n -(0008,0080)\n',
            "t.das, line 4, column 1: missing '}' at the end of the block",
        ),
        (
            V + '(0010,0010) := "a" "b"\n',
            L2 + "20: unexpected 'b' after the statement",
        ),
        (
            V + '(0008,1140)[0] := "x"\n',
            L2 + "1: a tag path must not end with an item number",
        ),
        (V + '(0010,0010) $ "x"\n', L2 + "13: unexpected character '$'"),
        (
            V + '"x"\n',
            L2 + "4: expected ':=', '?=', '-' or a condition, found the end of the line",
        ),
    ],
)
def test_errors_name_the_line_and_column(text: str, message: str) -> None:
    assert error(text) == message


def test_an_unknown_builtin_is_refused_when_the_variables_are_bound() -> None:
    text = V + "(0010,0010) := subject\n(0010,0020) := visit\n"
    assert error(text, {"subject": "S"}) == "t.das, line 3, column 16: unknown variable 'visit'"


def test_a_variable_set_by_the_script_is_not_a_builtin() -> None:
    script = parse('visit := "V1"\n(0010,0020) := visit\n')
    assert script.free_variables == {}
    Anonymizer([script], {})


def test_no_scripts_is_an_error() -> None:
    with pytest.raises(ScriptError, match="no script to apply"):
        Anonymizer([], {})


def test_conditions_keep_their_operators() -> None:
    script = parse(
        '(0008,0060) = "MR" ? -(0010,1000)\n'
        '(0008,0060) != "MR" ? -(0010,1000)\n'
        '(0008,0060) ~ "M." ? -(0010,1000)\n'
        '(0008,0060) !~ "M." ? -(0010,1000)\n'
    )
    ops = [s.condition.op for s in script.statements if isinstance(s, Conditional)
           and isinstance(s.condition, Compare)]  # fmt: skip
    assert ops == ["=", "!=", "~", "!~"]


def test_script_digest_is_of_the_text() -> None:
    a = parse("(0010,0010) := subject\n")
    b = parse("(0010,0010) := subject\n")
    c = parse("(0010,0010) := session\n")
    assert a.sha256 == b.sha256 != c.sha256
