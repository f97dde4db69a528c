package tiered

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

func TestRaw(t *testing.T) {
	t.Parallel()
	var c Codec = Raw{}
	for _, in := range []any{[]byte("a\x00b"), []byte{}, "text", ""} {
		b, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		switch in.(type) {
		case []byte:
			var p []byte
			err, out = c.Unmarshal(b, &p), p
		case string:
			var p string
			err, out = c.Unmarshal(b, &p), p
		}
		if err != nil || !reflect.DeepEqual(out, in) {
			t.Fatalf("%q: round trip gave %q, %v", in, out, err)
		}
	}
	src := []byte("shared")
	var dst []byte
	if err := c.Unmarshal(src, &dst); err != nil {
		t.Fatal(err)
	}
	src[0] = 'X'
	if string(dst) != "shared" {
		t.Fatal("Unmarshal did not copy its input")
	}
	if _, err := c.Marshal(42); err == nil {
		t.Fatal("Raw marshalled an int")
	}
	if err := c.Unmarshal([]byte("x"), new(int)); err == nil {
		t.Fatal("Raw unmarshalled into an *int")
	}
}
