package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// maxExpression bounds what calculate reads.
const maxExpression = 256

// evaluate computes an arithmetic expression: numbers, + - * / ^ (right
// associative), unary minus and parentheses.
func evaluate(expr string) (float64, error) {
	if len(expr) > maxExpression {
		return 0, fmt.Errorf("the expression is longer than %d characters", maxExpression)
	}
	p := &parser{s: expr}
	v, err := p.sum()
	if err != nil {
		return 0, err
	}
	if p.skip(); p.i < len(p.s) {
		return 0, fmt.Errorf("unexpected %q at position %d", p.s[p.i], p.i+1)
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, errors.New("the result is not a finite number (division by zero?)")
	}
	return v, nil
}

type parser struct {
	s     string
	i     int
	depth int
}

func (p *parser) skip() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *parser) peek() byte {
	p.skip()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) sum() (float64, error) {
	v, err := p.product()
	for err == nil {
		op := p.peek()
		if op != '+' && op != '-' {
			return v, nil
		}
		p.i++
		var r float64
		if r, err = p.product(); op == '+' {
			v += r
		} else {
			v -= r
		}
	}
	return 0, err
}

func (p *parser) product() (float64, error) {
	v, err := p.unary()
	for err == nil {
		op := p.peek()
		if op != '*' && op != '/' {
			return v, nil
		}
		p.i++
		var r float64
		if r, err = p.unary(); op == '*' {
			v *= r
		} else {
			v /= r
		}
	}
	return 0, err
}

// unary is a signed power: -2^2 is -(2^2), as in mathematics.
func (p *parser) unary() (float64, error) {
	switch p.peek() {
	case '-':
		p.i++
		v, err := p.unary()
		return -v, err
	case '+':
		p.i++
		return p.unary()
	}
	return p.power()
}

// power is right associative: 2^3^2 is 2^(3^2).
func (p *parser) power() (float64, error) {
	base, err := p.primary()
	if err != nil || p.peek() != '^' {
		return base, err
	}
	p.i++
	exp, err := p.unary()
	return math.Pow(base, exp), err
}

func (p *parser) primary() (float64, error) {
	switch p.peek() {
	case '(':
		if p.depth++; p.depth > 32 {
			return 0, errors.New("too many nested parentheses")
		}
		p.i++
		v, err := p.sum()
		if err != nil {
			return 0, err
		}
		if p.peek() != ')' {
			return 0, fmt.Errorf("missing ) at position %d", p.i+1)
		}
		p.i++
		p.depth--
		return v, nil
	}
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '.') {
		p.i++
	}
	if start == p.i {
		if p.i >= len(p.s) {
			return 0, errors.New("the expression ends too early")
		}
		return 0, fmt.Errorf("unexpected %q at position %d", p.s[p.i], p.i+1)
	}
	return strconv.ParseFloat(p.s[start:p.i], 64)
}
