package l2

import (
	"reflect"
	"testing"
)

func TestJSON(t *testing.T) {
	t.Parallel()
	type product struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	var c Codec = JSON{}
	for _, tc := range []struct {
		name string
		in   any
		out  func() any // a pointer to a fresh destination
	}{
		{"struct", product{ID: 1, Name: "cup"}, func() any { return new(product) }},
		{"string", "x\x00y", func() any { return new(string) }},
		{"slice", []int{1, 2, 3}, func() any { return new([]int) }},
		{"map", map[string]int{"a": 1}, func() any { return new(map[string]int) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := c.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			dst := tc.out()
			if err := c.Unmarshal(b, dst); err != nil {
				t.Fatal(err)
			}
			if got := reflect.ValueOf(dst).Elem().Interface(); !reflect.DeepEqual(got, tc.in) {
				t.Fatalf("round trip of %#v gave %#v", tc.in, got)
			}
		})
	}
	if err := c.Unmarshal([]byte("{not json"), new(product)); err == nil {
		t.Fatal("Unmarshal of garbage succeeded")
	}
	if _, err := c.Marshal(func() {}); err == nil {
		t.Fatal("Marshal of a func succeeded")
	}
}
