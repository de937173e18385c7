"""The one CSV writer: headings from the catalogue, money in yuan from fen, spreadsheet formulas defused."""

from console.tables import Column, Table, to_csv


def test_csv_writes_yuan_exactly_and_defuses_formulas():
    table = Table("t", [Column("name", "col.name"), Column("amount", "col.sold_value", money=True)],
                  [{"name": "=HYPERLINK(\"x\")", "amount": 123456789}, {"name": "-1+1", "amount": 1},
                   {"name": "-12.50", "amount": None}, {"name": "厅, \"一\"", "amount": 0}])
    text = to_csv(table, lambda key: {"col.name": "名称", "col.sold_value": "销售金额（元）"}[key]).decode("utf-8")
    assert text.startswith("\ufeff")
    assert text[1:].split("\r\n") == [
        "名称,销售金额（元）", "\"'=HYPERLINK(\"\"x\"\")\",1234567.89", "'-1+1,0.01", "-12.50,", "\"厅, \"\"一\"\"\",0.00", ""]
